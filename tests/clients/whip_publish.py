#!/usr/bin/env python3
# Owns: the WHIP publisher test client — publishes a synthetic VP8 640x480@30 video and an Opus sine
# tone to a Kaskade node over WHIP (non-trickle), reports on stdout as JSON lines, DELETEs at the end.
"""WHIP publisher for Kaskade's end-to-end tests.

stdout (one JSON object a line):
  {"event":"publishing","publisher":"<X-Kaskade-Publisher>","location":"<absolute session URL>"}
      once the peer connection is connected (ICE + DTLS) and media is flowing out;
  {"event":"done","video_frames_sent":n,"audio_frames_sent":n,"delete_status":s,"stopped_early":b}
      at the end (after --seconds, or on SIGTERM/SIGINT);
  {"event":"error","stage":"...","reason":"...", ...}   on failure (exit code 2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import kaskade_client as kc
from aiortc.rtcrtpsender import RTCRtpSender


def prefer_codecs(pc, kind_to_mime: dict) -> None:
    """Restricts each transceiver to one codec (plus rtx for video) so offers are plain VP8/Opus."""
    for t in pc.getTransceivers():
        wanted = kind_to_mime.get(t.kind)
        if not wanted:
            continue
        caps = RTCRtpSender.getCapabilities(t.kind).codecs
        prefs = [c for c in caps if c.mimeType.lower() == wanted.lower()]
        prefs += [c for c in caps if c.mimeType.lower() == f"{t.kind}/rtx"]
        if prefs:
            t.setCodecPreferences(prefs)


async def run(args) -> int:
    stop = asyncio.Event()
    kc.install_stop_signals(stop)
    pc = kc.new_peer_connection()
    video = kc.PatternVideoTrack()
    audio = kc.ToneAudioTrack()
    pc.addTransceiver(audio, direction="sendonly")
    pc.addTransceiver(video, direction="sendonly")
    prefer_codecs(pc, {"audio": "audio/opus", "video": "video/VP8"})
    location = None
    delete_status = None
    try:
        offer_sdp = await kc.set_local_and_gather(pc, await pc.createOffer())
        resp = await kc.http("POST", args.url, offer_sdp.encode(), "application/sdp",
                             token=args.token)
        if resp.status != 201:
            kc.emit("error", stage="post", status=resp.status, reason=resp.body[:500])
            return 2
        if "location" not in resp.headers:
            kc.emit("error", stage="post", status=resp.status, reason="no Location header")
            return 2
        location = kc.resolve(resp.headers.get("x-final-url", args.url), resp.headers["location"])
        publisher = resp.headers.get("x-kaskade-publisher", "")
        await pc.setRemoteDescription(kc.RTCSessionDescription(resp.body, "answer"))
        await kc.wait_connected(pc, args.connect_timeout)
        # "Publishing" means packets leave: wait for the first frames to have been encoded.
        await kc.wait_for(lambda: video.frames_sent > 0 and audio.frames_sent > 0,
                          args.connect_timeout, "the first frames to be sent")
        # RFC 9725 `Link: <turn:…>; rel="ice-server"` headers of the answer (the last one).
        kc.emit("publishing", publisher=publisher, location=location,
                ice_server_link=resp.headers.get("link", ""))
        stopped_early = await kc.wait_stop_or_timeout(stop, args.seconds)
        if pc.connectionState != "connected":
            kc.log(f"connection state at the end: {pc.connectionState}")
        if location:
            try:
                delete_status = (await kc.http("DELETE", location, timeout=5.0, token=args.token)).status
            except OSError as e:
                kc.log(f"DELETE failed: {e}")
        kc.emit("done", video_frames_sent=video.frames_sent, audio_frames_sent=audio.frames_sent,
                delete_status=delete_status, stopped_early=stopped_early,
                connection_state=pc.connectionState)
        return 0
    except (TimeoutError, ConnectionError, OSError) as e:
        kc.emit("error", stage="connect", reason=str(e), connection_state=pc.connectionState)
        if location:
            try:
                await kc.http("DELETE", location, timeout=5.0, token=args.token)
            except OSError:
                pass
        return 2
    finally:
        await pc.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True, help="WHIP endpoint, e.g. http://127.0.0.1:8080/whip/room1")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="how long to publish after connecting (default 10)")
    p.add_argument("--connect-timeout", type=float, default=15.0)
    p.add_argument("--token", default=None,
                   help="access token, sent as Authorization: Bearer (nodes with access control)")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

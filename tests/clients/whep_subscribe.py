#!/usr/bin/env python3
# Owns: the WHEP subscriber test client — receives a Kaskade room's audio+video over WHEP
# (non-trickle, recvonly), decodes it with aiortc and reports counted frames and fps as one JSON line.
"""WHEP subscriber for Kaskade's end-to-end tests.

Timeline: POST the offer, connect, wait up to --first-frame-timeout for the first decoded video
frame, then count for --seconds more. fps is measured from the first video frame to the end of that
window, so stalls lower it; video_fps_steady leaves out the first second after the first frame
(start-up bursts from jitter buffers would otherwise inflate the figure).

stdout: {"event":"first_frame","after_s":x} when the first video frame is decoded (the counting
window starts), then one final JSON line (exit code 0 even when nothing was decoded; the caller
asserts):
  {"event":"result","video_frames":n,"video_fps":x,"video_fps_steady":x,"audio_frames":n,
   "width":w,"height":h,"max_video_gap_ms":n (longest stall between two decoded video frames),
   "video_stalls":[[ms, ended_s], ...] (every stall of >= 200 ms: its length and when it ended,
   i.e. the first frame after it, in seconds of CLOCK_MONOTONIC — the clock Rust's Instant
   reads, so a harness can time "kill -> first frame again"),
   "served_by":"the WHEP URL after placement redirects",
   "location":"...","connection_state":"...","first_frame_after_s":x|null,"delete_status":s}
or, when the session could not be set up (exit code 2):
  {"event":"error","stage":"post|connect","status":s,"reason":"..."}
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import kaskade_client as kc


async def run(args) -> int:
    stop = asyncio.Event()
    kc.install_stop_signals(stop)
    pc = kc.new_peer_connection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    rx = kc.Receiver()
    pc.on("track", lambda track: rx.attach(track))
    location = None
    try:
        offer_sdp = await kc.set_local_and_gather(pc, await pc.createOffer())
        resp = await kc.http("POST", args.url, offer_sdp.encode(), "application/sdp",
                             token=args.token)
        if resp.status != 201:
            kc.emit("error", stage="post", status=resp.status, reason=resp.body[:500])
            return 2
        location = kc.resolve(resp.headers.get("x-final-url", args.url),
                              resp.headers.get("location", ""))
        await pc.setRemoteDescription(kc.RTCSessionDescription(resp.body, "answer"))
        started = time.monotonic()
        await kc.wait_connected(pc, args.connect_timeout)
    except (TimeoutError, ConnectionError, OSError) as e:
        kc.emit("error", stage="connect", reason=str(e), connection_state=pc.connectionState)
        await pc.close()
        return 2

    # Wait for the first decoded video frame (bounded), then count for --seconds.
    def first_video():
        c = rx.first("video")
        return c is not None and c.frames > 0

    try:
        await kc.wait_for(lambda: first_video() or stop.is_set(), args.first_frame_timeout,
                          "the first video frame")
    except TimeoutError as e:
        kc.log(str(e))
    first = rx.first("video")
    first_after = (first.first_at - started) if first and first.first_at else None
    if first_after is not None:
        kc.emit("first_frame", after_s=round(first_after, 3))
    progress = None
    if args.progress:
        async def report():
            while True:
                v = rx.first("video")
                kc.emit("frames", video=rx.total("video"), audio=rx.total("audio"),
                        max_video_gap_ms=round(v.max_gap * 1000) if v else 0)
                await asyncio.sleep(args.progress_interval)
        progress = asyncio.ensure_future(report())
    if not stop.is_set():
        await kc.wait_stop_or_timeout(stop, args.seconds)
    if progress:
        progress.cancel()
    end = time.monotonic()
    rx.stop_counting_at = end
    video = rx.first("video")
    result = dict(
        video_frames=rx.total("video"),
        video_fps=round(video.fps(end), 2) if video else 0.0,
        video_fps_steady=round(video.steady_fps(end), 2) if video else 0.0,
        audio_frames=rx.total("audio"),
        width=video.width if video else 0,
        height=video.height if video else 0,
        location=location,
        connection_state=pc.connectionState,
        first_frame_after_s=round(first_after, 3) if first_after is not None else None,
        max_video_gap_ms=round(video.max_gap * 1000) if video else 0,
        video_stalls=[[round(g * 1000), round(t, 4)] for g, t in video.stalls] if video else [],
        served_by=resp.headers.get("x-final-url", args.url),
    )
    await rx.stop()
    delete_status = None
    if location:
        try:
            delete_status = (await kc.http("DELETE", location, timeout=5.0, token=args.token)).status
        except OSError as e:
            kc.log(f"DELETE failed: {e}")
    await pc.close()
    kc.emit("result", delete_status=delete_status, **result)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True,
                   help="WHEP endpoint, e.g. http://127.0.0.1:8080/whep/room1[/publisher]")
    p.add_argument("--seconds", type=float, default=5.0,
                   help="how long to count after the first video frame (default 5)")
    p.add_argument("--connect-timeout", type=float, default=15.0)
    p.add_argument("--token", default=None,
                   help="access token, sent as Authorization: Bearer (nodes with access control)")
    p.add_argument("--first-frame-timeout", type=float, default=10.0)
    p.add_argument("--progress", action="store_true",
                   help="print a frames event with the running totals every --progress-interval s")
    p.add_argument("--progress-interval", type=float, default=0.5)
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())

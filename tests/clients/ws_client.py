#!/usr/bin/env python3
# Owns: the WebSocket-signalling test client — joins a Kaskade room over /ws (proto/src/signal.rs),
# optionally publishes synthetic audio+video on the publish connection, answers every
# subscribe_offer, decodes what it receives and reports events and frame counts as JSON lines.
"""WebSocket signalling client for Kaskade's end-to-end tests.

stdout carries one JSON object a line; "event" is
  - the `type` of every message the node sends (joined, publish_answer, subscribe_offer,
    participant_joined, participant_left, track_published, track_unpublished, track_muted, chat,
    error), with the message's fields; SDP bodies are replaced by their length (`sdp_len`);
  - "published"            after the publish answer was applied (fields: tracks = {mid: track id});
  - "publish_connected"    when the publish connection is connected;
  - "subscribe_connected"  when the subscribe connection is connected;
  - "first_frame"          when the first frame of a received track was decoded (track, kind);
  - "negotiation_error"    when applying an offer/answer failed (the client goes on);
  - "closed"               when the node closed the socket (code, reason);
  - "result"               last: video_frames, audio_frames, tracks = {track id: {kind, frames, fps,
                           fps_steady, width, height}}, participant.
It runs for --seconds after `joined` (or until SIGTERM/SIGINT, or the socket closes), then sends
`leave`. Exit code 0 unless it could not connect or join (2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import kaskade_client as kc
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from whip_publish import prefer_codecs


def strip_sdp(msg: dict) -> dict:
    out = {}
    for k, v in msg.items():
        if k == "type":
            continue
        if k == "sdp" and isinstance(v, str):
            out["sdp_len"] = len(v)
        else:
            out[k] = v
    return out


class Client:
    def __init__(self, args):
        self.args = args
        self.ws = None
        self.participant = None
        self.pub_pc = None
        self.pub_video = None
        self.pub_audio = None
        self.role = None
        self.sub_pc = None
        self.sub_tracks: dict = {}  # mid -> track id, from the latest subscribe_offer
        self.rx = kc.Receiver()
        self.labels_seen: set = set()
        self.stop = asyncio.Event()
        self.joined = asyncio.Event()
        self.close_info = None
        self.ice_servers: list = []  # from `joined`

    async def send(self, msg: dict) -> None:
        await self.ws.send(json.dumps(msg))

    # -- publish connection ------------------------------------------------------------------

    async def start_publishing(self) -> None:
        pc = kc.new_peer_connection(self.ice_servers, self.args.relay_only)
        self.pub_pc = pc
        self.pub_audio = kc.ToneAudioTrack(self.args.tone_amplitude)
        pc.addTransceiver(self.pub_audio, direction="sendonly")
        if not self.args.audio_only:
            self.pub_video = kc.PatternVideoTrack()
            pc.addTransceiver(self.pub_video, direction="sendonly")
        if self.args.loud_after is not None:
            asyncio.ensure_future(self._get_loud(self.pub_audio))
        prefer_codecs(pc, {"audio": "audio/opus", "video": "video/VP8"})

        @pc.on("connectionstatechange")
        def _state():
            if pc.connectionState == "connected":
                kc.emit("publish_connected")
            elif pc.connectionState == "failed":
                kc.emit("negotiation_error", role="publish", reason="publish connection failed")

        sdp = await kc.set_local_and_gather(pc, await pc.createOffer())
        sources = {mid: ("microphone" if kind == "audio" else "camera")
                   for mid, kind in kc.mids_by_kind(pc).items()}
        await self.send({"type": "publish_offer", "sdp": sdp, "sources": sources})

    async def _get_loud(self, track) -> None:
        await asyncio.sleep(self.args.loud_after)
        track.set_amplitude(self.args.loud_amplitude)
        kc.emit("got_loud", amplitude=self.args.loud_amplitude)

    async def stop_publishing(self) -> None:
        pc, self.pub_pc = self.pub_pc, None
        if pc is not None:
            await pc.close()
            kc.emit("publish_stopped")

    async def on_publish_answer(self, msg: dict) -> None:
        if self.pub_pc is None:
            kc.emit("negotiation_error", role="publish", reason="publish_answer without an offer")
            return
        await self.pub_pc.setRemoteDescription(kc.RTCSessionDescription(msg["sdp"], "answer"))
        kc.emit("published", tracks=msg.get("tracks", {}))

    # -- subscribe connection ----------------------------------------------------------------

    def _label_for(self, track) -> str:
        for t in self.sub_pc.getTransceivers():
            if t.receiver.track is track:
                return self.sub_tracks.get(t.mid, f"mid:{t.mid}")
        return "unknown"

    async def on_subscribe_offer(self, msg: dict) -> None:
        self.sub_tracks = dict(msg.get("tracks", {}))
        if self.sub_pc is None:
            pc = kc.new_peer_connection(self.ice_servers, self.args.relay_only)
            self.sub_pc = pc

            @pc.on("track")
            def _track(track):
                label = self._label_for(track)
                counter = self.rx.attach(track, label)
                asyncio.ensure_future(self._report_first_frame(counter))

            @pc.on("connectionstatechange")
            def _state():
                if pc.connectionState == "connected":
                    kc.emit("subscribe_connected")
                elif pc.connectionState == "failed":
                    kc.emit("negotiation_error", role="subscribe",
                            reason="subscribe connection failed")

        pc = self.sub_pc
        await pc.setRemoteDescription(kc.RTCSessionDescription(msg["sdp"], "offer"))
        sdp = await kc.set_local_and_gather(pc, await pc.createAnswer())
        await self.send({"type": "subscribe_answer", "sdp": sdp})

    async def _report_first_frame(self, counter) -> None:
        while counter.frames == 0 and not counter.ended:
            await asyncio.sleep(0.02)
        if counter.frames > 0:
            kc.emit("first_frame", track=counter.label, kind=counter.kind)

    # -- main loop ---------------------------------------------------------------------------

    async def handle(self, msg: dict) -> None:
        kind = msg.get("type", "")
        kc.emit(kind or "unknown", **strip_sdp(msg))
        try:
            if kind == "joined":
                self.participant = msg.get("participant")
                self.role = msg.get("role")
                self.ice_servers = msg.get("ice_servers") or []
                self.joined.set()
                if self.args.publish:
                    await self.start_publishing()
                if self.args.chat:
                    await self.send({"type": "chat", "text": self.args.chat})
            elif kind == "publish_answer":
                await self.on_publish_answer(msg)
            elif kind == "error" and msg.get("code") == "forbidden" and self.pub_pc is not None \
                    and "publish offer refused" in msg.get("message", ""):
                # Audience: the offer was refused; publish again once promoted.
                await self.stop_publishing()
            elif kind == "publish_closed":
                await self.stop_publishing()
            elif kind in ("participant_updated", "participant_joined") \
                    and msg.get("participant", {}).get("id") == self.participant:
                was, self.role = self.role, msg["participant"].get("role")
                if self.args.publish and self.pub_pc is None and was == "audience" \
                        and self.role in ("speaker", "host"):
                    await self.start_publishing()
            elif kind == "subscribe_offer":
                await self.on_subscribe_offer(msg)
        except (ValueError, KeyError, TimeoutError, ConnectionError) as e:
            kc.emit("negotiation_error", message_type=kind, reason=f"{type(e).__name__}: {e}")

    async def reader(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    kc.emit("negotiation_error", reason="node sent a non-JSON frame")
                    continue
                await self.handle(msg)
        except ConnectionClosed:
            pass
        # websockets' asyncio connection exposes the close frame received as close_code/reason.
        self.close_info = {"code": self.ws.close_code, "reason": self.ws.close_reason or ""}
        kc.emit("closed", **self.close_info)
        self.stop.set()

    async def run(self) -> int:
        kc.install_stop_signals(self.stop)
        try:
            self.ws = await asyncio.wait_for(connect(self.args.url, max_size=None),
                                             self.args.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            kc.emit("error", stage="connect", reason=str(e))
            return 2
        reader = asyncio.ensure_future(self.reader())
        join = {"type": "join", "room": self.args.room, "name": self.args.name}
        if self.args.token:
            join["token"] = self.args.token
        if self.args.role:
            join["role"] = self.args.role
        await self.send(join)
        try:
            await kc.wait_for(lambda: self.joined.is_set() or self.stop.is_set(),
                              self.args.connect_timeout, "joined")
        except TimeoutError as e:
            kc.emit("error", stage="join", reason=str(e))
        if not self.joined.is_set():
            reader.cancel()
            await self.ws.close()
            return 2
        await kc.wait_stop_or_timeout(self.stop, self.args.seconds)
        end = time.monotonic()
        self.rx.stop_counting_at = end
        tracks = {}
        for c in self.rx.counters:
            tracks[c.label] = {"kind": c.kind, "frames": c.frames, "fps": round(c.fps(end), 2),
                               "fps_steady": round(c.steady_fps(end), 2),
                               "width": c.width, "height": c.height}
        if self.close_info is None:
            try:
                await self.send({"type": "leave"})
            except ConnectionClosed:
                pass
        await self.rx.stop()
        for pc in (self.pub_pc, self.sub_pc):
            if pc is not None:
                await pc.close()
        await self.ws.close()
        reader.cancel()
        kc.emit("result", participant=self.participant, video_frames=self.rx.total("video"),
                audio_frames=self.rx.total("audio"), tracks=tracks,
                video_frames_sent=self.pub_video.frames_sent if self.pub_video else 0)
        return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True, help="signalling URL, e.g. ws://127.0.0.1:8080/ws")
    p.add_argument("--room", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--publish", action="store_true", help="publish a camera and a microphone")
    p.add_argument("--chat", default=None, help="send this chat text right after joining")
    p.add_argument("--token", default=None,
                   help="access token for the join (nodes with access control)")
    p.add_argument("--role", choices=["host", "speaker", "audience"], default=None,
                   help="role asked for in join; with --publish an audience member publishes "
                        "once a host promotes it")
    p.add_argument("--audio-only", action="store_true", help="publish the microphone only")
    p.add_argument("--tone-amplitude", type=int, default=8000,
                   help="amplitude of the published 400 Hz tone (0-32767, default 8000)")
    p.add_argument("--loud-after", type=float, default=None,
                   help="seconds after publishing when the tone switches to --loud-amplitude")
    p.add_argument("--loud-amplitude", type=int, default=20000)
    p.add_argument("--seconds", type=float, default=10.0,
                   help="how long to stay after joining (default 10)")
    p.add_argument("--connect-timeout", type=float, default=15.0)
    p.add_argument("--relay-only", action="store_true",
                   help="media only through the TURN servers the node names in `joined`")
    return asyncio.run(Client(p.parse_args()).run())


if __name__ == "__main__":
    sys.exit(main())

# Owns: the pieces shared by Kaskade's aiortc test clients (whip_publish.py, whep_subscribe.py,
# ws_client.py): the loopback ICE patch, synthetic camera/microphone tracks, non-trickle offer/answer
# helpers, a stdlib HTTP helper, decoded-frame counting and JSON-line event output.
"""Shared helpers for Kaskade's aiortc end-to-end test clients.

Import this module before creating any RTCPeerConnection: it patches aioice so that host candidates
are gathered on 127.0.0.1 only (aioice skips loopback by default), which keeps all test traffic on
the loopback interface.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import signal
import time
import urllib.error
import urllib.parse
import urllib.request

from client_output import emit, log  # noqa: F401  (re-exported: clients call kc.emit, kc.log)
from dataclasses import dataclass, field
from typing import Optional

import aioice.ice

# Loopback only: aioice would otherwise skip 127.0.0.1 and gather on every other interface.
aioice.ice.get_host_addresses = lambda *a, **k: ["127.0.0.1"]

from aiortc import (  # noqa: E402  (must come after the patch above)
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError  # noqa: E402
from av import AudioFrame, VideoFrame  # noqa: E402

VIDEO_WIDTH = 640
VIDEO_HEIGHT = 480
VIDEO_FPS = 30
VIDEO_CLOCK_RATE = 90000
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020
# How long after a track's first frame its "steady" frame rate starts being measured.
STEADY_AFTER = 1.0
# A gap between two decoded frames this long (s) counts as a stall and is listed.
STALL_S = 0.2
# Stalls listed per track at most (a broken stream would otherwise grow the list forever).
MAX_STALLS = 100
TONE_HZ = 400  # 48000 / 400 = 120 samples a period: one 20 ms frame holds exactly 8 periods




def new_peer_connection(ice_servers=None, relay_only: bool = False) -> RTCPeerConnection:
    """A peer connection with the node's STUN/TURN servers (`ice_servers` as in `joined`; none by
    default: aiortc would fall back to a public STUN otherwise); `relay_only` gathers TURN
    relay candidates only."""
    servers = [
        RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
        for s in (ice_servers or [])
    ]
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    return RTCPeerConnection(RTCConfiguration(iceServers=servers, iceTransportPolicy=policy))


async def wait_for(predicate, timeout: float, what: str, interval: float = 0.02) -> None:
    """Polls `predicate()` until it is true; raises TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def set_local_and_gather(pc: RTCPeerConnection, description, timeout: float = 10.0) -> str:
    """Applies a local offer/answer and waits until ICE gathering is complete (non-trickle);
    returns the local SDP with all candidates in it."""
    await pc.setLocalDescription(description)
    await wait_for(lambda: pc.iceGatheringState == "complete", timeout, "ICE gathering")
    return pc.localDescription.sdp


async def wait_connected(pc: RTCPeerConnection, timeout: float) -> None:
    """Waits until the peer connection is connected (ICE + DTLS); fails fast on `failed`/`closed`."""

    def ready() -> bool:
        if pc.connectionState in ("failed", "closed"):
            raise ConnectionError(f"peer connection {pc.connectionState}")
        return pc.connectionState == "connected"

    await wait_for(ready, timeout, "the peer connection to connect")


def mids_by_kind(pc: RTCPeerConnection) -> dict:
    """Maps each transceiver's mid to its kind (after setLocalDescription)."""
    return {t.mid: t.kind for t in pc.getTransceivers() if t.mid is not None}


# ---------------------------------------------------------------------------------------------
# Synthetic media


class PatternVideoTrack(MediaStreamTrack):
    """A 640x480, 30 fps moving test pattern (diagonal luma stripes sliding right, a white bar
    sliding down, slowly cycling chroma), built from bytes without numpy."""

    kind = "video"

    def __init__(self, width: int = VIDEO_WIDTH, height: int = VIDEO_HEIGHT, fps: int = VIDEO_FPS):
        super().__init__()
        self.width = width
        self.height = height
        self.fps = fps
        self.frames_sent = 0
        # Two periods of a 256-wide ramp so that any `width`-long window can be sliced out.
        period = bytes((x * 7) % 256 for x in range(256))
        self._ramp = period * ((width + 2 * height + 512) // 256 + 2)
        self._white_row = b"\xeb" * width
        self._start: Optional[float] = None

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = self.frames_sent
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + n / self.fps - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        self.frames_sent += 1

        w, h = self.width, self.height
        shift = (n * 4) % 256
        bar_top = (n * 3) % h
        rows = []
        ramp = self._ramp
        for y in range(h):
            if bar_top <= y < bar_top + 24:
                rows.append(self._white_row)
            else:
                off = shift + (y % 256)
                rows.append(ramp[off : off + w])
        frame = VideoFrame(width=w, height=h, format="yuv420p")
        frame.planes[0].update(b"".join(rows))
        u = 128 + int(60 * math.sin(n / 20.0))
        v = 128 + int(60 * math.cos(n / 20.0))
        frame.planes[1].update(bytes([u]) * frame.planes[1].buffer_size)
        frame.planes[2].update(bytes([v]) * frame.planes[2].buffer_size)
        frame.pts = n * (VIDEO_CLOCK_RATE // self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK_RATE)
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """A 400 Hz sine tone, 48 kHz mono s16, 20 ms frames. `amplitude` (0-32767) may be changed
    while it plays (a louder speaker for dominant-speaker tests)."""

    kind = "audio"

    def __init__(self, amplitude: int = 8000):
        super().__init__()
        self.samples = int(AUDIO_RATE * AUDIO_PTIME)
        self.frames_sent = 0
        self._start: Optional[float] = None
        self.set_amplitude(amplitude)

    def set_amplitude(self, amplitude: int) -> None:
        pcm = bytearray()
        for i in range(self.samples):
            s = int(amplitude * math.sin(2 * math.pi * TONE_HZ * i / AUDIO_RATE))
            pcm += s.to_bytes(2, "little", signed=True)
        self._pcm = bytes(pcm)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = self.frames_sent
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + n * AUDIO_PTIME - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        self.frames_sent += 1
        frame = AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.planes[0].update(self._pcm)
        frame.pts = n * self.samples
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


# ---------------------------------------------------------------------------------------------
# Counting what is received


@dataclass
class TrackCounter:
    """Counts decoded frames of one received track."""

    kind: str
    label: str = ""
    frames: int = 0
    first_at: Optional[float] = None
    last_at: Optional[float] = None
    width: int = 0
    height: int = 0
    ended: bool = False
    # Frames counted once the track has run for STEADY_AFTER s, to leave start-up bursts out.
    steady_at: Optional[float] = None
    steady_base: int = 0
    # Longest time between two consecutive decoded frames (a stall: failover, loss), in seconds.
    max_gap: float = 0.0
    max_gap_ended_at: Optional[float] = None
    # Every stall of at least STALL_S: (length s, time.monotonic() of the frame that ended it).
    stalls: list = field(default_factory=list)

    def fps(self, until: Optional[float] = None) -> float:
        """Frames after the first one divided by the time from the first frame to `until` (default:
        now), so that a stall before `until` lowers the figure."""
        if self.first_at is None or self.frames < 2:
            return 0.0
        end = until if until is not None else time.monotonic()
        span = end - self.first_at
        return (self.frames - 1) / span if span > 0 else 0.0

    def steady_fps(self, until: Optional[float] = None) -> float:
        """Frames per second from STEADY_AFTER s after the first frame to `until` (default now)."""
        if self.steady_at is None:
            return 0.0
        end = until if until is not None else time.monotonic()
        span = end - self.steady_at
        return (self.frames - self.steady_base) / span if span > 0 else 0.0


@dataclass
class Receiver:
    """Consumes every remote track of a peer connection and counts decoded frames."""

    counters: list = field(default_factory=list)
    tasks: list = field(default_factory=list)
    stop_counting_at: Optional[float] = None

    def attach(self, track: MediaStreamTrack, label: str = "") -> TrackCounter:
        counter = TrackCounter(kind=track.kind, label=label)
        self.counters.append(counter)
        self.tasks.append(asyncio.ensure_future(self._consume(track, counter)))
        return counter

    async def _consume(self, track: MediaStreamTrack, counter: TrackCounter) -> None:
        while True:
            try:
                frame = await track.recv()
            except (MediaStreamError, asyncio.CancelledError):
                counter.ended = True
                return
            now = time.monotonic()
            if self.stop_counting_at is not None and now > self.stop_counting_at:
                continue
            counter.frames += 1
            if counter.first_at is None:
                counter.first_at = now
            elif counter.last_at is not None:
                gap = now - counter.last_at
                if gap > counter.max_gap:
                    counter.max_gap = gap
                    counter.max_gap_ended_at = now
                if gap >= STALL_S and len(counter.stalls) < MAX_STALLS:
                    counter.stalls.append((gap, now))
            counter.last_at = now
            if counter.steady_at is None and now >= counter.first_at + STEADY_AFTER:
                counter.steady_at = now
                counter.steady_base = counter.frames
            if counter.kind == "video":
                counter.width = frame.width
                counter.height = frame.height

    def total(self, kind: str) -> int:
        return sum(c.frames for c in self.counters if c.kind == kind)

    def first(self, kind: str) -> Optional[TrackCounter]:
        for c in self.counters:
            if c.kind == kind:
                return c
        return None

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            try:
                await t
            except BaseException:  # noqa: BLE001 — tasks are being torn down
                pass


# ---------------------------------------------------------------------------------------------
# HTTP (stdlib only, run in a worker thread)


@dataclass
class HttpResponse:
    status: int
    headers: dict
    body: str


def _http_blocking(method: str, url: str, body: Optional[bytes], content_type: Optional[str],
                   timeout: float, token: Optional[str] = None) -> HttpResponse:
    req = urllib.request.Request(url, data=body, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()},
                                resp.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as e:
        return HttpResponse(e.code, {k.lower(): v for k, v in e.headers.items()},
                            e.read().decode("utf-8", "replace"))


MAX_REDIRECTS = 3


async def http(method: str, url: str, body: Optional[bytes] = None,
               content_type: Optional[str] = None, timeout: float = 15.0,
               token: Optional[str] = None) -> HttpResponse:
    """One HTTP request without blocking the event loop; HTTP error statuses are returned, not
    raised (connection errors are raised). 307/308 redirects (WHIP/WHEP placement) are followed
    with the same method and body, as the WHIP spec asks; urllib refuses to for POST. The final
    URL is in the response's `url` header entry (`x-final-url`). `token` is sent as a bearer
    access token (nodes with access control)."""
    for _ in range(MAX_REDIRECTS + 1):
        resp = await asyncio.get_running_loop().run_in_executor(
            None, _http_blocking, method, url, body, content_type, timeout, token)
        if resp.status in (307, 308) and resp.headers.get("location"):
            url = resolve(url, resp.headers["location"])
            continue
        resp.headers["x-final-url"] = url
        return resp
    return resp


def resolve(base_url: str, location: str) -> str:
    """Resolves a (possibly relative) Location header against the request URL."""
    return urllib.parse.urljoin(base_url, location)


# ---------------------------------------------------------------------------------------------
# Process lifetime


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set `stop` so that a client can finish cleanly (print its result, DELETE its
    session) when the harness stops it early."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def wait_stop_or_timeout(stop: asyncio.Event, seconds: float) -> bool:
    """Waits `seconds` or until `stop` is set; returns True when stopped early."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
        return True
    except asyncio.TimeoutError:
        return False

#!/usr/bin/python3
# Owns: the GStreamer WHIP publisher — a studio-encoder stand-in built on GStreamer's own WebRTC
# stack (webrtcbin, libnice, libsrtp; Debian 12's GStreamer 1.22, whose plugins-bad has no
# whipsink) that publishes a test pattern and a tone into a Kaskade room over WHIP, optionally as
# three simulcast layers, independent of aiortc and of Kaskade's code. Reports on stdout as JSON
# lines.
"""WHIP publisher made of GStreamer elements (webrtcbin) for Kaskade's webcast test.

Pipeline: videotestsrc -> VP8 (vp8enc) or H264 (x264enc, constrained baseline, no B-frames,
packetization-mode 1) and audiotestsrc -> Opus, both into one webrtcbin (max-bundle, send-only,
ICE host candidates on 127.0.0.1 only, no STUN). Non-trickle WHIP (RFC 9725): the offer is POSTed
once gathering is complete, as application/sdp with `Authorization: Bearer <token>`; 307/308
redirects are followed with the same body; the 201's answer is applied; at the end (--seconds, or
SIGTERM/SIGINT) the session's Location is DELETEd.

--simulcast (VP8): three encoders (320x180, 640x360, --width x --height) with their own SSRCs,
each payloader writing the mid and rtp-stream-id header extensions (rids q, h, f), merged by
rtpfunnel into webrtcbin's one video transceiver. webrtcbin 1.22 cannot describe simulcast in
SDP, so this script adds `a=msid`, `a=rid:<q|h|f> send` and `a=simulcast:send q;h;f` to the
video m-section of the offer it POSTs (and drops that section's `a=ssrc` lines); the media is
still entirely GStreamer's.

Runs with the system Python that Debian's python3-gi belongs to (/usr/bin/python3); needs
gir1.2-gst-plugins-bad-1.0, gstreamer1.0-nice and GStreamer plugins base/good/bad (ugly for H264).

stdout (one JSON object a line):
  {"event":"published","publisher":"<X-Kaskade-Publisher>","location":"<session URL>",
   "video_codec":"VP8|H264","width":w,"height":h,"fps":f,"simulcast":[rid,...]}
      once ICE+DTLS are connected and the encoders have produced frames;
  {"event":"result","video_frames_sent":n (full-size layer),"audio_frames_sent":n,
   "layer_frames_sent":{rid:n},"rtp":{"video/VP8":{"packets":n,"bytes":n},"audio/OPUS":{...}},
   "delete_status":s,"stopped_early":b,"connection_state":"..."}
      at the end;
  {"event":"error","stage":"pipeline|offer|post|answer|connect","status":s,"reason":"..."}
      when publishing failed (exit code 2; a refused POST carries the HTTP status).
"""

from __future__ import annotations

import argparse
import random
import signal
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

from client_output import emit, log

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtp", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstRtp, GstSdp, GstWebRTC  # noqa: E402

MAX_REDIRECTS = 3
VP8_PT = 96
H264_PT = 102
OPUS_PT = 111
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
MID_EXT_ID = 1
RID_EXT_ID = 2
# Simulcast layers below the full size: (rid, width, height, kbit/s); "f" is --width x --height.
LOWER_LAYERS = [("q", 320, 180, 150), ("h", 640, 360, 500)]




# ---------------------------------------------------------------------------------------------
# HTTP (stdlib)


class HttpResponse:
    def __init__(self, status: int, headers: dict, body: str, url: str):
        self.status, self.headers, self.body, self.url = status, headers, body, url


def http(method: str, url: str, token: str | None, body: bytes | None = None,
         ssl_context: ssl.SSLContext | None = None, timeout: float = 15.0) -> HttpResponse:
    """One request; HTTP error statuses are returned. 307/308 are followed with the same method
    and body (WHIP placement redirects); `url` of the result is where it ended."""
    for _ in range(MAX_REDIRECTS + 1):
        req = urllib.request.Request(url, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/sdp")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ssl_context) as r:
                resp = HttpResponse(r.status, {k.lower(): v for k, v in r.headers.items()},
                                    r.read().decode("utf-8", "replace"), url)
        except urllib.error.HTTPError as e:
            resp = HttpResponse(e.code, {k.lower(): v for k, v in e.headers.items()},
                                e.read().decode("utf-8", "replace"), url)
        if resp.status in (307, 308) and resp.headers.get("location"):
            url = urllib.parse.urljoin(url, resp.headers["location"])
            continue
        return resp
    return resp


# ---------------------------------------------------------------------------------------------
# Pipeline description


def layers(args) -> list:
    """(rid, width, height, kbit/s) of every video encoding; rid "" without simulcast."""
    full = (args.width, args.height, args.video_kbps)
    if not args.simulcast:
        return [("",) + full]
    return LOWER_LAYERS + [("f",) + full]


def encoder(args, name: str, kbps: int) -> str:
    """gst-launch syntax of one video encoder and its payloader (named `pay_<name>`)."""
    keyint = max(1, round(args.fps * args.keyframe_interval))
    if args.video_codec == "h264":
        return (f"x264enc name=venc_{name} tune=zerolatency speed-preset=ultrafast bframes=0 "
                f"key-int-max={keyint} bitrate={kbps} ! "
                f"video/x-h264,profile=constrained-baseline,stream-format=byte-stream ! "
                f"h264parse ! rtph264pay name=pay_{name} config-interval=-1 "
                f"aggregate-mode=zero-latency pt={H264_PT}")
    return (f"vp8enc name=venc_{name} deadline=1 cpu-used=8 end-usage=cbr "
            f"error-resilient=partitions keyframe-max-dist={keyint} "
            f"target-bitrate={kbps * 1000} ! "
            f"rtpvp8pay name=pay_{name} picture-id-mode=15-bit pt={VP8_PT}")


def video_rtp_caps(args) -> str:
    if args.video_codec == "h264":
        return (f"application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,"
                f"payload={H264_PT},packetization-mode=(string)1")
    return f"application/x-rtp,media=video,encoding-name=VP8,clock-rate=90000,payload={VP8_PT}"


def video_caps_filter(args) -> str:
    """The capsfilter in front of webrtcbin's video pad, named so the pad can be found."""
    return f'capsfilter name=video_rtp caps="{video_rtp_caps(args)}"'


def video_branch(args) -> str:
    """gst-launch syntax of the video part, ending in webrtcbin (through rtpfunnel when there
    are several encodings)."""
    src = (f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={args.width},"
           f"height={args.height},framerate={args.fps}/1 ! videoconvert ! ")
    if not args.simulcast:
        kbps = layers(args)[0][3]
        return src + f"queue ! {encoder(args, 'main', kbps)} ! {video_caps_filter(args)} ! webrtc."
    parts = [src + "tee name=vt"]
    for rid, width, height, kbps in layers(args):
        parts.append(f"vt. ! queue ! videoscale ! videoconvert ! "
                     f"video/x-raw,width={width},height={height} ! "
                     f"{encoder(args, rid, kbps)} ! funnel.")
    parts.append(f"rtpfunnel name=funnel ! {video_caps_filter(args)} ! webrtc.")
    return " ".join(parts)


def audio_branch() -> str:
    return ("audiotestsrc is-live=true wave=sine freq=400 volume=0.3 ! audioconvert ! "
            "audioresample ! audio/x-raw,rate=48000,channels=2 ! queue ! opusenc name=aenc "
            f"frame-size=20 ! rtpopuspay pt={OPUS_PT} ! application/x-rtp,media=audio,"
            f"encoding-name=OPUS,clock-rate=48000,payload={OPUS_PT} ! webrtc.")


def add_simulcast_to_offer(sdp: str, rids: list, msid: str) -> str:
    """The simulcast attributes webrtcbin 1.22 cannot write, added to the video m-section: the
    layers are told apart by their rid header extension, not by SSRCs, so the section's
    `a=ssrc` lines go and an `a=msid` names the track instead."""
    out, in_video = [], False
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            in_video = line.startswith("m=video")
        if in_video and line.startswith("a=ssrc"):
            continue
        out.append(line)
        if in_video and line.startswith("a=mid:"):
            out.append(f"a=msid:{msid}")
            out += [f"a=rid:{rid} send" for rid in rids]
            out.append("a=simulcast:send " + ";".join(rids))
    return "\r\n".join(out)


# ---------------------------------------------------------------------------------------------
# The publisher


class Publisher:
    def __init__(self, args):
        self.args = args
        self.loop = GLib.MainLoop()
        self.exit_code = 0
        self.location: str | None = None
        self.publisher = ""
        self.connected = False
        self.published = False
        self.offer_sent = False
        self.layers = layers(args)
        self.rids = [rid for rid, *_ in self.layers if rid]
        self.frames = {rid or "main": 0 for rid, *_ in self.layers}
        self.frames["audio"] = 0
        self.ssl_context = None
        if args.ca_cert:
            self.ssl_context = ssl.create_default_context(cafile=args.ca_cert)
        launch = (f"webrtcbin name=webrtc bundle-policy=max-bundle "
                  f"{video_branch(args)} {audio_branch()}")
        log(f"pipeline: {launch}")
        self.pipeline = Gst.parse_launch(launch)
        self.webrtc = self.pipeline.get_by_name("webrtc")
        # Host candidates on loopback only (libnice would gather on every interface); no TCP.
        # The wrapper is kept for the process's lifetime: 1.22's ice-agent getter hands out a
        # reference that PyGObject would otherwise drop, destroying webrtcbin's agent.
        self.ice = self.webrtc.get_property("ice-agent")
        self.ice.emit("add-local-ip-address", "127.0.0.1")
        self.ice.set_property("ice-tcp", False)
        for name in self.frames:
            element = "aenc" if name == "audio" else f"venc_{name}"
            pad = self.pipeline.get_by_name(element).get_static_pad("src")
            pad.add_probe(Gst.PadProbeType.BUFFER, self.count, name)
        if self.rids:
            self.prepare_simulcast()
        for pad in self.webrtc.sinkpads:
            pad.get_property("transceiver").set_property(
                "direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        self.webrtc.connect("on-negotiation-needed", self.on_negotiation_needed)
        self.webrtc.connect("notify::ice-gathering-state", self.on_gathering_state)
        self.webrtc.connect("notify::connection-state", self.on_connection_state)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self.on_bus_error)

    def prepare_simulcast(self):
        """Each layer's payloader: its own SSRC and the mid + rid header extensions. The video
        transceiver's codec preferences carry what rtpfunnel's merged caps lack (an SSRC and the
        extmap), without which webrtcbin 1.22 makes no offer."""
        video_pad = self.pipeline.get_by_name("video_rtp").get_static_pad("src").get_peer()
        ssrcs = random.sample(range(1, 2**32), len(self.rids))
        for rid, ssrc in zip(self.rids, ssrcs):
            pay = self.pipeline.get_by_name(f"pay_{rid}")
            pay.set_property("ssrc", ssrc)
            pay.set_property("auto-header-extension", False)
            for uri, ext_id, prop, value in ((MID_URI, MID_EXT_ID, "mid", "video0"),
                                             (RID_URI, RID_EXT_ID, "rid", rid)):
                ext = GstRtp.RTPHeaderExtension.create_from_uri(uri)
                ext.set_id(ext_id)
                ext.set_property(prop, value)
                pay.emit("add-extension", ext)
        preferences = (f"{video_rtp_caps(self.args)},ssrc=(uint){ssrcs[-1]},"
                       f"extmap-{MID_EXT_ID}=(string){MID_URI},"
                       f"extmap-{RID_EXT_ID}=(string){RID_URI}")
        video_pad.get_property("transceiver").set_property(
            "codec-preferences", Gst.Caps.from_string(preferences))

    def count(self, _pad, _info, name):
        self.frames[name] += 1
        return Gst.PadProbeReturn.OK

    # --- negotiation -------------------------------------------------------------------------

    def on_negotiation_needed(self, _element):
        promise = Gst.Promise.new_with_change_func(self.on_offer_created, None)
        self.webrtc.emit("create-offer", None, promise)

    def on_offer_created(self, promise, _data):
        promise.wait()
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply else None
        if offer is None:
            GLib.idle_add(self.fail, "offer", None, f"create-offer failed: {reply}")
            return
        self.webrtc.emit("set-local-description", offer, Gst.Promise.new())

    def on_gathering_state(self, _element, _pspec):
        state = self.webrtc.get_property("ice-gathering-state")
        if state == GstWebRTC.WebRTCICEGatheringState.COMPLETE and not self.offer_sent:
            self.offer_sent = True
            GLib.idle_add(self.post_offer)

    def post_offer(self):
        offer = self.webrtc.get_property("local-description").sdp.as_text()
        if self.rids:
            offer = add_simulcast_to_offer(offer, self.rids, "kaskade-gst video0")
        log("offer:\n" + offer)
        try:
            resp = http("POST", self.args.url, self.args.token, offer.encode(), self.ssl_context)
        except OSError as e:
            self.fail("post", None, str(e))
            return False
        if resp.status != 201:
            self.fail("post", resp.status, resp.body[:500])
            return False
        if "location" not in resp.headers:
            self.fail("post", resp.status, "no Location header")
            return False
        self.location = urllib.parse.urljoin(resp.url, resp.headers["location"])
        self.publisher = resp.headers.get("x-kaskade-publisher", "")
        log("answer:\n" + resp.body)
        res, sdp = GstSdp.SDPMessage.new_from_text(resp.body)
        if res != GstSdp.SDPResult.OK:
            self.fail("answer", resp.status, f"unparsable SDP answer ({res})")
            return False
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        self.webrtc.emit("set-remote-description", answer, Gst.Promise.new())
        GLib.timeout_add(int(self.args.connect_timeout * 1000), self.check_connected)
        return False

    # --- media flowing -----------------------------------------------------------------------

    def on_connection_state(self, _element, _pspec):
        state = self.webrtc.get_property("connection-state")
        log(f"connection state: {state.value_nick}")
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and not self.connected:
            self.connected = True
            GLib.timeout_add(20, self.wait_for_frames)
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            GLib.idle_add(self.fail, "connect", None, "ICE/DTLS failed")

    def check_connected(self):
        if not self.connected:
            state = self.webrtc.get_property("connection-state").value_nick
            self.fail("connect", None, f"not connected after {self.args.connect_timeout:.0f} s "
                      f"(connection state {state})")
        return False

    def wait_for_frames(self):
        """"Published" once every encoder has produced frames after the connection came up."""
        if self.published or not self.loop.is_running():
            return False
        if all(n > 0 for n in self.frames.values()):
            self.published = True
            emit("published", publisher=self.publisher, location=self.location,
                 video_codec=self.args.video_codec.upper(), width=self.args.width,
                 height=self.args.height, fps=self.args.fps, simulcast=self.rids)
            GLib.timeout_add(int(self.args.seconds * 1000), self.finish, False)
            return False
        return True

    # --- the end -----------------------------------------------------------------------------

    def rtp_stats(self) -> dict:
        """Outbound RTP packets and bytes per codec (e.g. "video/VP8"), from webrtcbin's
        get-stats. 1.22 labels every outbound stream's "kind" after one transceiver, so the
        codec entries (which name each SSRC's MIME type) say what a stream is; simulcast layers
        without a codec entry of their own count under the video codec."""
        promise = Gst.Promise.new()
        self.webrtc.emit("get-stats", None, promise)
        promise.wait()
        reply = promise.get_reply()
        if reply is None:
            return {}
        mime_of_ssrc, outbound = {}, []

        def visit(_field, value, _data):
            if isinstance(value, Gst.Structure):
                if value.get_name() == "codec":
                    mime_of_ssrc[value.get_value("ssrc")] = value.get_value("mime-type")
                elif value.get_name() == "outbound-rtp":
                    outbound.append((value.get_value("ssrc"), value.get_value("packets-sent"),
                                     value.get_value("bytes-sent")))
            return True

        reply.foreach(visit, None)
        video_mime = next((m for m in mime_of_ssrc.values() if m.startswith("video/")), "video")
        out = {}
        for ssrc, packets, sent in outbound:
            entry = out.setdefault(mime_of_ssrc.get(ssrc, video_mime), {"packets": 0, "bytes": 0})
            entry["packets"] += packets or 0
            entry["bytes"] += sent or 0
        return out

    def finish(self, stopped_early: bool):
        if not self.loop.is_running():
            return False
        try:
            rtp = self.rtp_stats()
            delete_status = None
            if self.location:
                try:
                    delete_status = http("DELETE", self.location, self.args.token,
                                         ssl_context=self.ssl_context, timeout=5.0).status
                except OSError as e:
                    log(f"DELETE failed: {e}")
            full = self.rids[-1] if self.rids else "main"
            emit("result", video_frames_sent=self.frames[full],
                 audio_frames_sent=self.frames["audio"],
                 layer_frames_sent={rid: self.frames[rid] for rid in self.rids}, rtp=rtp,
                 delete_status=delete_status, stopped_early=stopped_early,
                 connection_state=self.webrtc.get_property("connection-state").value_nick)
        finally:
            # An exception in a GLib callback would otherwise leave the loop (and us) running.
            self.loop.quit()
        return False

    def fail(self, stage: str, status, reason: str):
        if not self.loop.is_running():
            return False
        self.exit_code = 2
        try:
            emit("error", stage=stage, status=status, reason=reason)
        finally:
            self.loop.quit()
        return False

    def on_bus_error(self, _bus, message):
        err, debug = message.parse_error()
        self.fail("pipeline", None, f"{err.message} ({debug})")

    def on_signal(self):
        if self.published:
            self.finish(True)
        else:
            self.fail("connect", None, "stopped before publishing")
        return GLib.SOURCE_REMOVE

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, self.on_signal)
        if self.pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            emit("error", stage="pipeline", status=None, reason="the pipeline does not start")
            return 2
        self.loop.run()
        self.pipeline.set_state(Gst.State.NULL)
        return self.exit_code


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True, help="WHIP endpoint, e.g. https://node/whip/lecture")
    p.add_argument("--token", default=None,
                   help="access token of a host (sent as Authorization: Bearer)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="how long to publish after the first frames went out (default 10)")
    p.add_argument("--video-codec", choices=["vp8", "h264"], default="vp8")
    p.add_argument("--simulcast", action="store_true",
                   help="VP8 only: send 320x180, 640x360 and the full size as rids q, h, f")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--video-kbps", type=int, default=1500,
                   help="bitrate of the full-size video (kbit/s)")
    p.add_argument("--keyframe-interval", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument("--connect-timeout", type=float, default=15.0)
    p.add_argument("--ca-cert", default=None,
                   help="PEM file of the CA that signed the node's HTTPS certificate")
    args = p.parse_args()
    if args.simulcast and args.video_codec != "vp8":
        p.error("--simulcast is implemented for VP8 only")
    Gst.init(None)
    try:
        publisher = Publisher(args)
    except GLib.Error as e:
        emit("error", stage="pipeline", status=None, reason=e.message)
        return 2
    return publisher.run()


if __name__ == "__main__":
    sys.exit(main())

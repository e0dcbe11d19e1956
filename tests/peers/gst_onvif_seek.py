"""GStreamer's ``rtspsrc onvif-mode=true`` seeking to an ONVIF clock range (run with Debian's
python3 and gi).

Usage: gst_onvif_seek.py URL USER PASSWORD START_NS END_NS RATE_CONTROL(true|false) [PROTOCOLS]

START_NS/END_NS are UNIX-epoch nanoseconds. The pipeline is played until its first picture,
then seeked in GST_FORMAT_TIME to the range expressed as nanoseconds since the NTP epoch
(1900), which is how rtspsrc in ONVIF mode turns a seek into ``Range: clock=``. Every RTP
packet reaching ``rtponvifparse`` after the seek is parsed here: one JSON line per access
unit (its 0xABAC capture time as UNIX ns, C/E/D/T, the PLAY's CSeq byte), then a summary line with the number of
pictures the depayloader handed on and whether EOS arrived.
"""

from __future__ import annotations

import json
import struct
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

NTP_OFFSET_NS = 2_208_988_800 * 1_000_000_000


def unit_of(data: bytes) -> dict[str, object] | None:
    """The 0xABAC extension of an RTP packet, None without one."""
    if len(data) < 12 or not data[0] & 0x10:
        return None
    offset = 12 + 4 * (data[0] & 0x0F)
    profile, words = struct.unpack_from("!HH", data, offset)
    if profile != 0xABAC or words < 3:
        return None
    seconds, fraction, flags, cseq = struct.unpack_from("!IIBB", data, offset + 4)
    wall = seconds * 1_000_000_000 + (fraction * 1_000_000_000 >> 32) - NTP_OFFSET_NS
    seq, rtptime = struct.unpack_from("!HI", data, 2)
    return {"wall_ns": wall, "seq": seq, "rtptime": rtptime, "c": bool(flags & 0x80),
            "e": bool(flags & 0x40), "d": bool(flags & 0x20), "t": bool(flags & 0x10), "cseq": cseq}  # fmt: skip


def main() -> int:
    url, user, password, start_ns, end_ns, rate_control = sys.argv[1:7]
    protocols = sys.argv[7] if len(sys.argv) > 7 else "tcp"
    Gst.init(None)
    pipeline = Gst.parse_launch(
        f"rtspsrc name=src location={url} user-id={user} user-pw={password} onvif-mode=true "
        f"onvif-rate-control={rate_control} protocols={protocols} ! "
        "rtponvifparse name=parse ! rtph264depay name=depay ! fakesink name=sink sync=false"
    )
    parse = pipeline.get_by_name("parse")
    sink = pipeline.get_by_name("sink")
    lock = threading.Lock()
    state = {"seeked": False, "pictures": 0, "before": 0, "eos": False, "segments": []}
    loop = GLib.MainLoop()

    def on_rtp(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        buf = info.get_buffer()
        ok, mapped = buf.map(Gst.MapFlags.READ)
        if ok:
            unit = unit_of(bytes(mapped.data))
            buf.unmap(mapped)
            if unit is not None:
                with lock:
                    seeked = state["seeked"]
                unit["seeked"] = seeked
                unit["pts"] = buf.pts
                print(json.dumps(unit), flush=True)
        return Gst.PadProbeReturn.OK

    def on_sink(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        if info.type & Gst.PadProbeType.BUFFER:
            with lock:
                if state["seeked"]:
                    state["pictures"] += 1
                else:
                    state["before"] += 1
                    if state["before"] == 1:
                        GLib.idle_add(seek)
        elif info.type & Gst.PadProbeType.EVENT_DOWNSTREAM:
            event = info.get_event()
            if event.type == Gst.EventType.SEGMENT:
                seg = event.parse_segment()
                state["segments"].append([seg.start, seg.stop, seg.time, seg.base, seg.rate])
        return Gst.PadProbeReturn.OK

    def seek() -> bool:
        with lock:
            state["seeked"] = True
        done = pipeline.seek(1.0, Gst.Format.TIME, Gst.SeekFlags.FLUSH,
                             Gst.SeekType.SET, int(start_ns) + NTP_OFFSET_NS,
                             Gst.SeekType.SET, int(end_ns) + NTP_OFFSET_NS)  # fmt: skip
        print(json.dumps({"seek": bool(done)}), flush=True)
        return False

    parse.get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, on_rtp)
    sink.get_static_pad("sink").add_probe(
        Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_DOWNSTREAM, on_sink
    )

    def on_message(_bus: Gst.Bus, message: Gst.Message) -> None:
        if message.type == Gst.MessageType.EOS:
            state["eos"] = True
            loop.quit()
        elif message.type == Gst.MessageType.ERROR:
            err, debug = message.parse_error()
            print(json.dumps({"error": str(err), "debug": debug}), flush=True)
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    GLib.timeout_add_seconds(int(sys.argv[8]) if len(sys.argv) > 8 else 30, loop.quit)
    pipeline.set_state(Gst.State.PLAYING)
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    print(json.dumps({"pictures": state["pictures"], "before": state["before"],
                      "eos": state["eos"], "segments": state["segments"]}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

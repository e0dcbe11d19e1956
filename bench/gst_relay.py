"""GStreamer's RTSP server re-serving a camera with shared media: the relay of ``bench.live``.

Runs under Debian's /usr/bin/python3 (python3-gi; not the project's venv). argv: CAMERA_URL
PORT. Serves rtsp://127.0.0.1:PORT/live as ``rtspsrc ! rtph264depay ! rtph264pay`` with one
shared media (one camera connection for every viewer), to viewers over TCP interleaved or
UDP unicast; it reads the camera over TCP, as the box does. Prints READY when it
listens; stops on SIGTERM.
"""

import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

camera, port = sys.argv[1], sys.argv[2]
Gst.init(None)
launch = (
    f"( rtspsrc location={camera} protocols=tcp latency=0 ! rtph264depay ! "
    "rtph264pay name=pay0 pt=96 config-interval=-1 )"
)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(launch)
factory.set_shared(True)
factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
loop = GLib.MainLoop()
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
print("READY", flush=True)
loop.run()

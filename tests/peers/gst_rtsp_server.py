"""GStreamer's RTSP server as an independent camera for the tests.

Runs under Debian's /usr/bin/python3 (python3-gi; not the project's venv). argv:
PORT [--codec h264|h265] [--audio] [--size 640x360] [--fps 25] [--gop 25] [--user U --password P]
[--switch-size 320x180 --switch-after 3] [--protocols tcp,udp]
Serves rtsp://127.0.0.1:PORT/live (video test pattern, live, RTCP sender reports on).
With --switch-size the picture size changes --switch-after seconds after the media is built
(its first client): the raw caps change live, the encoder renegotiates and sends new
parameter sets with an IDR picture on the same RTSP session.
--protocols limits the lower transports offered (default: GStreamer's, UDP, UDP multicast and
TCP; RTSP over HTTP tunnels are accepted on the same port either way).
Prints READY when it listens; stops on SIGTERM.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--codec", choices=("h264", "h265"), default="h264")
parser.add_argument("--audio", action="store_true")
parser.add_argument("--size", default="640x360")
parser.add_argument("--fps", type=int, default=25)
parser.add_argument("--gop", type=int, default=25)
parser.add_argument("--bitrate", type=int, default=1000, help="kbit/s")
parser.add_argument("--user")
parser.add_argument("--password")
parser.add_argument("--switch-size", help="WxH to change to while streaming")
parser.add_argument("--switch-after", type=float, default=3.0, help="seconds")
parser.add_argument("--protocols", help="comma-separated lower transports: udp, udp-mcast, tcp")
args = parser.parse_args()
width, height = args.size.split("x")

Gst.init(None)
video = (
    "videotestsrc is-live=true pattern=ball ! "
    f'capsfilter name=size caps="video/x-raw,width={width},height={height},framerate={args.fps}/1" ! '
    "videoconvert ! "
)
if args.codec == "h264":
    video += (
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.gop} bitrate={args.bitrate} ! "
        "video/x-h264,profile=main ! rtph264pay name=pay0 pt=96 config-interval=-1"
    )
else:
    video += (
        f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={args.gop} bitrate={args.bitrate} ! "
        "rtph265pay name=pay0 pt=96 config-interval=-1"
    )
launch = f"( {video} "
if args.audio:
    launch += "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! avenc_aac ! rtpmp4gpay name=pay1 pt=97 "
launch += ")"

server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(str(args.port))
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(launch)
factory.set_shared(True)
if args.protocols:
    flags = {
        "udp": GstRtsp.RTSPLowerTrans.UDP,
        "udp-mcast": GstRtsp.RTSPLowerTrans.UDP_MCAST,
        "tcp": GstRtsp.RTSPLowerTrans.TCP,
    }
    chosen = GstRtsp.RTSPLowerTrans(0)
    for name in args.protocols.split(","):
        chosen |= flags[name.strip()]
    factory.set_protocols(chosen)
if args.user:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    auth.add_digest(args.user, args.password or "", token)
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("user", "media.factory.access", True)
    permissions.add_permission_for_role("user", "media.factory.construct", True)
    factory.set_permissions(permissions)
if args.switch_size:
    new_width, new_height = args.switch_size.split("x")

    def switch(media):
        caps = f"video/x-raw,width={new_width},height={new_height},framerate={args.fps}/1"
        media.get_element().get_by_name("size").set_property("caps", Gst.Caps.from_string(caps))
        return False

    def configure(_factory, media):
        GLib.timeout_add(int(args.switch_after * 1000), switch, media)

    factory.connect("media-configure", configure)
server.get_mount_points().add_factory("/live", factory)
if server.attach(None) == 0:
    print("could not listen", file=sys.stderr)
    sys.exit(1)
loop = GLib.MainLoop()
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
print("READY", flush=True)
loop.run()

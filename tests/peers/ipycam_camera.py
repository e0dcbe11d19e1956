"""An independent simulated ONVIF camera: the `ipycam` package fed a moving test pattern.

Runs under .venv-peers/bin/python, inside a network namespace of its own (ipycam binds the
wildcard address and multicasts a Hello at start). argv: IP ONVIF_PORT RTSP_PORT USER PASSWORD
NAME WORKDIR. Prints READY when it serves; stops cleanly (with a Bye) on SIGTERM.
"""

import os
import signal
import sys

import numpy as np
from ipycam import CameraConfig, IPCamera

ip, onvif_port, rtsp_port, user, password, name, workdir = sys.argv[1:8]
os.chdir(workdir)  # ipycam writes its PTZ presets file into the working directory
config = CameraConfig(
    name=name,
    local_ip=ip,
    onvif_port=int(onvif_port),
    rtsp_port=int(rtsp_port),
    username=user,
    password=password,
    main_width=640,
    main_height=360,
    main_fps=10,
    sub_width=320,
    sub_height=180,
    sub_fps=10,
    hw_accel="cpu",
)
config._config_path = os.path.join(workdir, "ipycam.json")
camera = IPCamera(config)
if not camera.start():
    sys.exit(1)
print("READY", flush=True)

running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
frame = np.zeros((360, 640, 3), np.uint8)
for i in range(8):
    frame[:, i * 80 : (i + 1) * 80] = ((i & 1) * 255, (i >> 1 & 1) * 255, (i >> 2 & 1) * 255)
n = 0
try:
    while running and camera.is_running:
        camera.stream(np.roll(frame, n * 4, axis=1))  # paces itself to the configured rate
        n += 1
finally:
    camera.stop()

"""Read side: RTSP server, replay reader, live sessions, export (from the live and replay milestones on)."""

"""Authentication shared by the HTTP (SOAP) and RTSP front-ends."""

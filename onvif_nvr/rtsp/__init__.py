"""Wire formats shared by the RTSP client (ingest) and server (live, replay): sans-IO."""

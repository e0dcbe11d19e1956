"""Write side: ingest, hub, segment writer, index, retention, jobs (from the recording-core milestone on)."""

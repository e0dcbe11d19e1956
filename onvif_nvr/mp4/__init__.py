"""ISO-BMFF (fragmented MP4) boxes: writer and reader, sans-IO."""

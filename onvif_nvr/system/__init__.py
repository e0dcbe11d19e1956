"""The device itself: users, persisted settings, host information, logs."""

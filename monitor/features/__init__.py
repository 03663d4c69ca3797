"""Per-frame face and lip features, and audio features, on the media clock."""

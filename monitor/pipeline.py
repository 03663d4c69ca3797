"""One session's pipeline: timestamped media in, events out. (Being written.)"""

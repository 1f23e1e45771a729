"""The reference for checksum.pyx: the same checksum over frames given as bytes."""

MASK = (1 << 64) - 1


def checksum_frames(frames):
    """(frames, checksum) as checksum.pyx's checksum_socket computes them."""
    total = 0
    count = 0
    for frame in frames:
        h = 14695981039346656037
        for byte in frame:
            h = ((h ^ byte) * 1099511628211) & MASK
        total = (total * 1000003 + h) & MASK
        count += 1
    return count, total

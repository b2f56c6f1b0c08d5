"""Signed distance functions of 2-D shapes (negative inside), on numpy coordinate grids: what the
procedural worlds draw with, anti-aliased by their distance to the edge."""

from __future__ import annotations

import numpy as np


def sd_circle(x, y, cx, cy, r):
    dx, dy = x - cx, y - cy
    return np.sqrt(dx * dx + dy * dy) - r


def sd_ellipse(x, y, cx, cy, a, b):
    # first-order distance (k - 1) / |grad k|: exact on the boundary, which is all AA needs
    dx, dy = (x - cx) / a, (y - cy) / b
    k = np.sqrt(dx * dx + dy * dy)
    gx, gy = dx / a, dy / b
    g = np.sqrt(gx * gx + gy * gy) / np.maximum(k, 1e-9)
    return (k - 1.0) / np.maximum(g, 1e-9)


def sd_box(x, y, cx, cy, hx, hy, r=0.0):
    qx, qy = np.abs(x - cx) - hx + r, np.abs(y - cy) - hy + r
    ox, oy = np.maximum(qx, 0.0), np.maximum(qy, 0.0)
    return np.sqrt(ox * ox + oy * oy) + np.minimum(np.maximum(qx, qy), 0.0) - r


def sd_polygon(x, y, pts):
    """Exact SDF of a simple polygon (convex or not), Inigo Quilez's crossing-number version."""
    x, y = np.broadcast_arrays(x, y)
    vx, vy = pts[0]
    d = (x - vx) * (x - vx) + (y - vy) * (y - vy)
    inside = np.zeros(x.shape, dtype=bool)
    for i in range(len(pts)):
        (ax, ay), (bx, by) = pts[i], pts[i - 1]
        ex, ey, wx, wy = bx - ax, by - ay, x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        qx, qy = wx - ex * t, wy - ey * t
        d = np.minimum(d, qx * qx + qy * qy)
        c1, c2, c3 = y >= ay, y < by, ex * wy > ey * wx
        inside ^= (c1 & c2 & c3) | (~c1 & ~c2 & ~c3)
    return np.where(inside, -1.0, 1.0) * np.sqrt(d)


def sd_segments(x, y, segs, half_width):
    """Union of capsules of radius half_width around segments [(ax, ay, bx, by), ...]."""
    d = None
    for ax, ay, bx, by in segs:
        ex, ey, wx, wy = bx - ax, by - ay, x - ax, y - ay
        t = np.clip((wx * ex + wy * ey) / max(ex * ex + ey * ey, 1e-12), 0.0, 1.0)
        qx, qy = wx - ex * t, wy - ey * t
        q = qx * qx + qy * qy
        d = q if d is None else np.minimum(d, q)
    return np.sqrt(d) - half_width

"""How many numbers a token must carry: a linear PCA of p x p x 3 pixel patches, fitted on single
images of the world (objects, emblems, pretraining families; never a triplet), reconstructing
held-out domain panels (composite, logo, object) at 64 px. A lower bound on a fitted codec.

    .venv/bin/python bench/probes/patch_pca.py
"""
import numpy as np
from models.domains.logo_object.world import make_single, make_triplet
from models.pretrain.data import make_image
S = 64
train = []
for i in range(1500):
    train.append(np.asarray(make_single(5_000_000 + i, S, "object" if i % 2 else "logo")[0], np.float32))
    train.append(np.asarray(make_image(6_000_000 + i, S), np.float32))
test = []
for i in range(60):
    t = make_triplet(9_500_000 + i, S)
    test += [np.asarray(x, np.float32) for x in (t.composite, t.logo, t.object)]
def patches(imgs, p):
    a = np.stack(imgs) / 255.0
    n = a.shape[0]; a = a.reshape(n, S // p, p, S // p, p, 3).transpose(0, 1, 3, 2, 4, 5)
    return a.reshape(-1, p * p * 3)
for p, ks in ((8, (16, 32, 64)), (4, (12, 16, 24))):
    X = patches(train, p); mu = X.mean(0); C = np.cov((X - mu).T)
    w, V = np.linalg.eigh(C); V = V[:, ::-1]
    T = patches(test, p)
    for k in ks:
        R = (T - mu) @ V[:, :k] @ V[:, :k].T + mu
        mse = ((np.clip(R, 0, 1) - T) ** 2).reshape(len(test), -1).mean(1)
        ps = 10 * np.log10(1 / np.maximum(mse, 1e-10))
        print(f"patch {p}x{p} ({p*p*3} values) -> {k} ch: mean PSNR {ps.mean():.2f} dB, per panel composite/logo/object "
              f"{ps[0::3].mean():.2f}/{ps[1::3].mean():.2f}/{ps[2::3].mean():.2f}; numbers per packed token {4*k}", flush=True)

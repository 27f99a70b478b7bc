"""domain_prediction picks on saved EPN probabilities, against the shares and against the EPN's own
prior (bit_experts.training.epn.upstream_log_p on the work directory's upstream source).

python score3.py WORKDIR PROBS_NPZ
"""

import json
import sys

import numpy as np

from bit_experts.training import epn as epn_lib
from bit_experts.training import outputs, upstream
from vtab_eval import selectors

workdir, npz = sys.argv[1:3]
config = json.load(open(f"{workdir}/config.json"))
source = upstream.open_source(config)
model = outputs.load_model(workdir, "epn")
info = json.load(open(f"{workdir}/models/epn/info.json"))
prior = epn_lib.upstream_log_p(model, source, info["resolution"])
z = np.load(npz)
outs = [str(o) for o in z["epn_outputs"]]
size = dict(zip([str(d) for d in z["domains"]], z["counts"]))
n = int(z["num_images"])
own = dict(zip(outs, prior))
shares = {o: float(np.log(size[o] / n)) for o in outs}
print("prior", {o: round(v, 3) for o, v in own.items()})
score = selectors.get("domain_prediction").score_probabilities
for key in z.files:
    if not key.startswith("epn/"):
        continue
    p = z[key]
    a = score(p, outs, shares)
    b = score(p, outs, own)
    f = lambda s: max(s, key=s.get)
    print(
        f"{key[4:]:38s} shares {f(a):16s} own prior {f(b):16s}",
        " ".join(f"{o}={v:.2f}" for o, v in b.items()),
    )

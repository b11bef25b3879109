"""`edgecache client-config`: the exact files each client needs to use this mirror.

For every configured upstream and every address edgecache serves on, it renders containerd
`certs.d/<registry>/hosts.toml` (plus `_default`), a podman/CRI-O `registries.conf.d` drop-in
with the CA under `containers/certs.d`, k3s `registries.yaml`, and Docker's `daemon.json`
`registry-mirrors` with `certs.d/<host:port>/ca.crt`. Files that are there already are merged
into, not replaced (`install.py`); one module per client format.
"""

from edgecache.clientconfig.endpoints import Endpoint, endpoints
from edgecache.clientconfig.install import Change, apply, diff, plan
from edgecache.clientconfig.render import Output, render

__all__ = ["Change", "Endpoint", "Output", "apply", "diff", "endpoints", "plan", "render"]

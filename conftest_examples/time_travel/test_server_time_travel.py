"""The same expiries against a server (any client, any language): move its clock over HTTP.

Against an ``nvcf-emulate`` you started yourself, use its URL instead of ``nvcf_server.url``;
from a shell: ``curl -X POST $NVCF_URL/_emulator/clock -d '{"advance": 3601}'``.
"""

from __future__ import annotations

import requests

from nvcf_emulator import EmulatorServer, RemoteEmulator

META = {"contentType": "text/plain", "description": "notes"}
UPLOAD_HEADERS = {"Content-Type": "text/plain", "x-amz-meta-nvcf-asset-description": "notes"}


def test_url_and_asset_expire_on_the_servers_clock(nvcf_server: EmulatorServer) -> None:
    base, auth = nvcf_server.url, {"Authorization": "Bearer nvapi-any"}
    server = RemoteEmulator(base)  # or plain POST /_emulator/clock

    def create() -> dict[str, str]:
        return dict(requests.post(f"{base}/v2/nvcf/assets", headers=auth, json=META).json())

    uploaded, late = create(), create()
    r = requests.put(uploaded["uploadUrl"], data=b"x", headers=UPLOAD_HEADERS)
    assert r.status_code == 200

    server.clock.advance(3601)  # the upload URL lives 1 hour
    r = requests.put(late["uploadUrl"], data=b"x", headers=UPLOAD_HEADERS)
    assert r.status_code == 403
    assert "<Message>Request has expired</Message>" in r.text

    server.clock.advance(23 * 3600)  # 24 h 01 min after the upload: the asset is gone
    r = requests.get(f"{base}/v2/nvcf/assets/{uploaded['assetId']}", headers=auth)
    assert r.status_code == 404
    assert requests.get(f"{base}/v2/nvcf/assets", headers=auth).json() == {"assets": []}

from tests.integration.test_ingest_fast_path import *  # noqa
async def test_probe(client, tmp_path):
    for m, p in [("DELETE","/health"),("POST","/ready"),("GET","/webhooks/x"),("PUT","/api/v1/webhooks/anything"),("GET","/api/v1/nothing-here"),("DELETE","/metrics")]:
        r = await client.request(m, p)
        print(m, p, r.status, r.headers.get("Allow"), await r.text())
    r = await client.get("/metrics"); print([l for l in (await r.text()).splitlines() if "webhooks_received" in l])

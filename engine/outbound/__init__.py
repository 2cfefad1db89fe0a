"""Outbound webhooks: signature schemes, the RSA key ring, the SSRF guard."""

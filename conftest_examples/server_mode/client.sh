#!/usr/bin/env bash
# A non-Python client: create an asset, upload a file, invoke a function with it (curl only).
# Usage: NVCF_URL=... NGC_API_KEY=... FUNCTION_ID=... client.sh FILE
set -euo pipefail
file="$1"
auth="Authorization: Bearer ${NGC_API_KEY}"

created=$(curl -sS --noproxy '*' -X POST "${NVCF_URL}/v2/nvcf/assets" -H "$auth" \
  -H 'Content-Type: application/json' \
  -d '{"contentType": "application/octet-stream", "description": "client upload"}')
asset_id=$(printf '%s' "$created" | sed -n 's/.*"assetId": *"\([^"]*\)".*/\1/p')
upload_url=$(printf '%s' "$created" | sed -n 's/.*"uploadUrl": *"\([^"]*\)".*/\1/p')

curl -sS --noproxy '*' --fail -X PUT -T "$file" "$upload_url" \
  -H 'Content-Type: application/octet-stream' \
  -H 'x-amz-meta-nvcf-asset-description: client upload'

curl -sS --noproxy '*' --fail -X POST "${NVCF_URL}/v2/nvcf/pexec/functions/${FUNCTION_ID}" \
  -H "$auth" -H 'Content-Type: application/json' \
  -H "NVCF-INPUT-ASSET-REFERENCES: ${asset_id}" -d '{}'

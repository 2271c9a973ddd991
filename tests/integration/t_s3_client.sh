#!/usr/bin/env bash
# The object-storage client against s3s-fs with authentication on (it verifies SigV4).
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/s3.sh"
start_s3
cd "$ROOT"
LB_S3_ENDPOINT="http://127.0.0.1:$S3_PORT" LB_S3_BUCKET=legacy-import LB_S3_ACCESS_KEY="$S3_ACCESS_KEY" \
  LB_S3_SECRET_KEY="$S3_SECRET_KEY" cargo test -q --test s3_client -- --ignored --test-threads=2 2>&1 | tail -5

"""schemathesis hooks of scripts/openapi-test.sh.

POST /jobs has rules across its query parameters that OpenAPI cannot state
for parameters, and that its description states instead: one rate mode at
most (crf, target_size_bytes or min_ssim), a format that holds the codec
(h264/mp4, h265/mp4, av1/mp4, av1/webm, vp9/webm) and a crf within the
codec's own range (51 at most for h264 and h265, 1 at least for av1). A
request that breaks one is refused with 400, by the contract.

Before a request generated as valid is sent, these rules are applied to it,
changing only what breaks them, so that "a valid request is never refused"
still holds over everything else the fuzzer draws. Requests generated as
invalid are sent as they are.
"""

import schemathesis

RATE_MODES = ("crf", "target_size_bytes", "min_ssim")
FORMATS = {"h264": ("mp4",), "h265": ("mp4",), "av1": ("mp4", "webm"), "vp9": ("webm",)}
CRF_RANGE = {"h264": (0, 51), "h265": (0, 51), "av1": (1, 63), "vp9": (0, 63)}


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if case.operation.method.upper() != "POST" or case.operation.path != "/jobs":
        return
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    query = case.query
    if not query:
        return
    asked = [name for name in RATE_MODES if name in query]
    for extra in asked[1:]:
        del query[extra]
    codec = query.get("codec", "h264")
    if codec not in FORMATS:
        return
    if "format" in query and query["format"] not in FORMATS[codec]:
        del query["format"]
    crf = query.get("crf")
    # A phase may give the value as it goes on the wire.
    if isinstance(crf, str) and crf.isdigit():
        crf = int(crf)
    if isinstance(crf, int) and not isinstance(crf, bool):
        low, high = CRF_RANGE[codec]
        query["crf"] = min(max(crf, low), high)

-- wrk script: POSTs the file named by BENCH_BODY as every request's body.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
dofile(os.getenv("BENCH_LUA") .. "/auth.lua")

-- Prints the JSON line the harness reads.
dofile(os.getenv("BENCH_LUA") .. "/report.lua")

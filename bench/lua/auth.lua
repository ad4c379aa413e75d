-- Shared by the harness's scripts: when BENCH_TOKEN_FILE names a file, its
-- content is sent as a bearer token on every request.
local token_file = os.getenv("BENCH_TOKEN_FILE")
if token_file then
  local f = assert(io.open(token_file, "rb"))
  wrk.headers["Authorization"] = "Bearer " .. f:read("*a")
  f:close()
end

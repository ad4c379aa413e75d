-- wrk script: GETs the paths listed in the file named by BENCH_PATHS, one
-- per line, in turn (each connection starting at its own offset).
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do
  paths[#paths + 1] = line
end
local i = 0
dofile(os.getenv("BENCH_LUA") .. "/auth.lua")

init = function(args)
  i = math.random(#paths)
end

request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end

-- Prints the JSON line the harness reads.
dofile(os.getenv("BENCH_LUA") .. "/report.lua")

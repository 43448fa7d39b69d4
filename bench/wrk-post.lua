-- wrk: POST the file named by JAILGATE_BENCH_BODY (the 64 MiB echo test).
local f = assert(io.open(assert(os.getenv("JAILGATE_BENCH_BODY")), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"

Running 6s test @ http://127.0.0.1:18284/cgi-bin/hello.sh
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     8.55ms    2.30ms  31.03ms   76.32%
    Req/Sec     0.94k   108.24     1.19k    75.00%
  11279 requests in 6.02s, 1.15MB read
Requests/sec:   1873.55
Transfer/sec:    195.92KB

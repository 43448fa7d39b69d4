#!/bin/sh
# 1 MiB of output with its length declared.
printf 'Content-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n'
exec head -c 1048576 /dev/zero

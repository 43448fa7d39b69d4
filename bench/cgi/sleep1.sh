#!/bin/sh
# A slow CGI: holds its slot for a second, as a CGI waiting on a database would.
sleep 1
printf 'Content-Type: text/plain\r\n\r\nslept\n'

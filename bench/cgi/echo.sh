#!/bin/sh
# The request body back, byte for byte.
printf 'Content-Type: application/octet-stream\r\nContent-Length: %s\r\n\r\n' "${CONTENT_LENGTH:-0}"
exec cat

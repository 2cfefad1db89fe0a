#!/bin/sh
# $1 service, $2 message: data in argv, quoted wherever it is used.
printf '%s: %s\n' "$1" "$2"

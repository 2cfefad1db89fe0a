#!/bin/bash
echo "$1, StackStorm!"

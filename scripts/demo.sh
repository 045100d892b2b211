#!/usr/bin/env bash
echo "demo: not yet (needs the xvsd daemon)"

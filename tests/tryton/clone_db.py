#!/usr/bin/env python3
"""Copy a Tryton SQLite database with SQLite's backup API.

A plain `cp` of <db>.sqlite can lose the last commits, which may still sit
in the -wal file; the backup API reads through the WAL.
Usage: clone_db.py SRC_FILE DST_FILE"""
import os
import sqlite3
import sys

src, dst = sys.argv[1:3]
for suffix in ('', '-wal', '-shm'):
    if os.path.exists(dst + suffix):
        os.remove(dst + suffix)
with sqlite3.connect(src) as s, sqlite3.connect(dst) as d:
    s.backup(d)

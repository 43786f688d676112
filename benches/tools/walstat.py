#!/usr/bin/env python3
"""Frames of a SQLite WAL by b-tree: which tables and indexes the commits wrote.
usage: walstat.py <db> <orders>   (db-wal beside it; db is opened read-only on a copy)"""
import sqlite3, struct, sys, shutil, os, collections, tempfile
db = sys.argv[1]; orders = int(sys.argv[2])
wal = open(db + "-wal", "rb").read()
magic, ver, psz, ckseq, salt1, salt2 = struct.unpack(">IIIIII", wal[:24])
frames = []; off = 32; commits = 0
while off + 24 + psz <= len(wal):
    pg, dbsz, s1, s2 = struct.unpack(">IIII", wal[off:off+16])
    if (s1, s2) != (salt1, salt2): break
    frames.append(pg); commits += dbsz != 0
    off += 24 + psz
tmp = tempfile.mkdtemp()
shutil.copy(db, tmp + "/x.db"); shutil.copy(db + "-wal", tmp + "/x.db-wal")
c = sqlite3.connect(tmp + "/x.db")
names = {p: n for n, p in c.execute("SELECT name, pageno FROM dbstat")}
by = collections.Counter(names.get(p, "?free/other") for p in frames)
print(f"page size {psz}, frames {len(frames)}, commits {commits}, orders {orders}")
print(f"frames per order {len(frames)/orders:.2f}, per commit {len(frames)/max(commits,1):.2f}, commits per order {commits/orders:.2f}")
for n, k in by.most_common():
    print(f"  {n:32s} {k:8d}  {k/orders:6.2f} per order  {100*k/len(frames):5.1f} %")
distinct = collections.Counter(names.get(p, "?") for p in set(frames))
print("distinct pages written per b-tree:", dict(distinct.most_common(12)))

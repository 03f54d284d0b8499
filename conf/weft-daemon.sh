#!/bin/sh
# The seed's /opt/flannel/flanneld.sh with `./flanneld` replaced by
# `./weft daemon`: same flags, same relative paths (run from /opt/weft).
# Change --public-ip on each node.
./weft daemon \
  --public-ip=10.4.7.21 \
  --etcd-endpoints=https://10.4.7.12:2379,https://10.4.7.21:2379,https://10.4.7.22:2379 \
  --etcd-keyfile=./cert/client-key.pem \
  --etcd-certfile=./cert/client.pem \
  --etcd-cafile=./cert/ca.pem \
  --iface=eth0 \
  --subnet-file=/run/weft/subnet.env \
  --healthz-port=2401

#!/bin/sh
# The seed's /opt/flannel/flanneld.sh with `./flanneld` replaced by
# `./weft daemon` (run from /opt/weft): same flags. The certificates are
# those the conflist names (/etc/weft), since the plugin reads them too; exec
# so that supervisord's stop signal reaches the daemon itself.
# Change --public-ip on each node, and set the same "publicIP" in the conflist.
exec ./weft daemon \
  --public-ip=10.4.7.21 \
  --etcd-endpoints=https://10.4.7.12:2379,https://10.4.7.21:2379,https://10.4.7.22:2379 \
  --etcd-keyfile=/etc/weft/client-key.pem \
  --etcd-certfile=/etc/weft/client.pem \
  --etcd-cafile=/etc/weft/ca.pem \
  --iface=eth0 \
  --subnet-file=/run/weft/subnet.env \
  --healthz-port=2401

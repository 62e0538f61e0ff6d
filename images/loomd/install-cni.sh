#!/bin/sh
# install-cni SRC DST: the loomd DaemonSet's init container. Copies every file of SRC (loom,
# loom-ipam and the reference CNI plugins) into DST (the host's /opt/cni/bin), each through a
# temporary name in DST and a rename, so that a runtime calling a plugin meanwhile runs the old
# binary or the new one, never a half-written file, and a process running the old one keeps
# it. It writes no CNI configuration: loomd writes /etc/cni/net.d/00-loom.conflist itself,
# once it is ready to serve the pods the runtime will then start.
set -eu
src=${1:?usage: install-cni SRC DST}
dst=${2:?usage: install-cni SRC DST}
if [ ! -d "$dst" ]; then
	echo "install-cni: $dst is not a directory" >&2
	exit 1
fi
tmp=
trap 'if [ -n "$tmp" ]; then rm -f "$tmp"; fi' EXIT
n=0
for f in "$src"/*; do
	[ -f "$f" ] || continue
	name=${f##*/}
	tmp=$dst/.$name.install-cni
	cp "$f" "$tmp"
	chmod 0755 "$tmp"
	mv -f "$tmp" "$dst/$name"
	tmp=
	n=$((n + 1))
done
if [ "$n" -eq 0 ]; then
	echo "install-cni: nothing to install in $src" >&2
	exit 1
fi
echo "install-cni: installed $n binaries from $src into $dst"

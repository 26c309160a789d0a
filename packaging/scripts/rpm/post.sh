# keep-vip %post ($1: 1 install, 2 upgrade). A fresh install is not
# started: edit /etc/keep-vip/config.yaml, then
# `systemctl enable --now keep-vip-supervisor`.
if [ ! -e /var/lib/keep-vip ] && [ ! -e /var/lib/private/keep-vip ]; then
	install -d -m 0700 /var/lib/keep-vip
fi
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
exit 0

# keep-vip %post ($1: 1 install, 2 upgrade). A fresh install is not
# started: edit /etc/keep-vip/config.yaml, then
# `systemctl enable --now keep-vip-supervisor`.
# The Raft state directory is the unit's StateDirectory: systemd makes it
# for the dynamic user at first start.
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
exit 0

# keep-vip %postun ($1: 0 erase, 1 upgrade): reload systemd; an upgrade
# restarts a running service on the new binaries. The Raft state in
# /var/lib/keep-vip is kept on erase, as RPM keeps data; remove it by hand.
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart keep-vip-supervisor.service >/dev/null 2>&1 || :
	fi
fi
exit 0

# keep-vip %preun ($1: 0 erase, 1 upgrade): an erase stops and disables the
# service (it gives up the VIP first).
if [ "$1" -eq 0 ]; then
	if [ -d /run/systemd/system ]; then
		systemctl --no-reload disable --now keep-vip-supervisor.service >/dev/null 2>&1 || :
	else
		systemctl --no-reload disable keep-vip-supervisor.service >/dev/null 2>&1 || :
	fi
fi
exit 0

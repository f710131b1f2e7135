# %preun of the ps-agent .rpm: %systemd_preun ps-agent.service (disable and stop on
# erase, not on upgrade), then unload: on_exit = "keep" leaves the programs attached and
# pinned when the service stops, and they go with the package.
if [ $1 -eq 0 ]; then
    systemctl --no-reload disable --now ps-agent.service >/dev/null 2>&1 || :
    /usr/sbin/ps-agent unload || :
fi

# %postun of the ps-agent .rpm: %systemd_postun_with_restart ps-agent.service. On an
# upgrade, restart the service if it runs; the new agent takes over the programs the old
# one kept attached (on_exit = "keep"), so enforcement does not lapse.
if [ $1 -ge 1 ]; then
    systemctl try-restart ps-agent.service >/dev/null 2>&1 || :
fi
# On erase, the package's own directories, if empty: cargo-generate-rpm lists files, not
# directories (an edited config stays, as config.toml.rpmsave, and so does its directory).
if [ $1 -eq 0 ]; then
    rmdir /etc/ps-agent /usr/share/doc/ps-agent /usr/share/licenses/ps-agent 2>/dev/null || :
fi

# kube-join-agent %post ($1: 1 on install, 2 or more on upgrade). The package enables
# nothing by itself: on first install `systemctl preset` applies the distribution's
# presets (Fedora and RHEL: disabled unless a preset enables it); cloud-init or the
# administrator enables it. Nothing is started.
# The admin's fragments go here (cloud-init writes its join fragment).
mkdir -p /etc/kube-join-agent/config.d
systemd-tmpfiles --create kube-join-agent.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset kube-join-agent.service >/dev/null 2>&1 || :
fi

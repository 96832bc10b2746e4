// ccflare-server under PM2 (docs/deployment.md, "PM2"), for machines that already run PM2:
//
//   pm2 start deploy/pm2/ecosystem.config.js && pm2 save
//
// PM2 stops a process with SIGINT, which ccflare treats as SIGTERM: it stops accepting, lets
// streams in flight finish (CCFLARE_SHUTDOWN_TIMEOUT), then flushes its records. kill_timeout
// is how long PM2 waits before SIGKILL: above the drain, the flush (as long again) and the
// OAuth tokens' save (6 s). PM2's default, 1.6 s, would cut every stream.
module.exports = {
  apps: [
    {
      name: "ccflare",
      script: "/usr/local/bin/ccflare-server",
      // A native binary: no Node.js interpreter, one process (never cluster mode).
      interpreter: "none",
      exec_mode: "fork",
      instances: 1,
      cwd: "/var/lib/ccflare",
      autorestart: true,
      restart_delay: 2000,
      max_restarts: 10,
      kill_timeout: 90000,
      // Log lines are on stderr; PM2 writes them to its log files (pm2 logs ccflare).
      merge_logs: true,
      time: false,
      env: {
        HOST: "127.0.0.1",
        PORT: "8080",
        DATABASE_URL: "/var/lib/ccflare/ccflare.db",
        LOG_FORMAT: "json",
        CCFLARE_SHUTDOWN_TIMEOUT: "30",
        // Secrets from files readable only by the user PM2 runs as, never in this file.
        CCFLARE_ADMIN_KEY_FILE: "/etc/ccflare/admin_key",
        CLAUDE_API_KEYS_FILE: "/etc/ccflare/api_keys",
      },
    },
  ],
};

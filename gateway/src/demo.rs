//! `gateway demo`: a jail with the classic shell-CGI set and four sample CGIs, built in a
//! temporary folder, served on loopback, removed again on exit.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::{
    account_or_default, Config, FrontUser, ListenAddr, CGI_DIR, DEFAULT_WORKER_ID,
};
use crate::jailfs;
use crate::root::startup::Startup;

/// The sample CGIs: (file name, script). Plain POSIX sh, using only the jail's programs.
const SAMPLES: &[(&str, &str)] = &[
    (
        "hello.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"Hello from a jailed shell CGI, running as uid $(id -u) at $(date).\"\n",
    ),
    ("env.sh", "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nenv | sort\n"),
    (
        "echo.sh",
        "#!/bin/sh\n# Sends the request body back unchanged.\nprintf 'Content-Type: %s\\n\\n' \"${CONTENT_TYPE:-application/octet-stream}\"\nexec cat\n",
    ),
    (
        "form.sh",
        r#"#!/bin/sh
# A form that posts to itself; the answer is HTML-escaped before it is shown.
printf 'Content-Type: text/html; charset=utf-8\n\n'
echo '<!doctype html><title>Jailgate form</title><form method="post">'
echo 'Your name: <input name="name"> <button>Send</button></form>'
if [ "$REQUEST_METHOD" = POST ]; then
  body=$(head -c "${CONTENT_LENGTH:-0}")
  name=$(printf '%s' "$body" | sed -n 's/^name=//p' | tr '+' ' ' | sed 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g')
  echo "<p>Hello, $name (as the jail received it, still URL-encoded).</p>"
fi
"#,
    ),
];

/// Builds the demo jail, serves it until SIGTERM or SIGINT, removes it. Root only. The workers
/// run as their default account, the front as `gateway_user` or its default.
pub fn run(listen: SocketAddr, gateway_user: Option<&str>) -> anyhow::Result<ExitCode> {
    let user = account_or_default(None, DEFAULT_WORKER_ID, "--user", "workers'")
        .map_err(anyhow::Error::msg)?;
    let folder = tempfile::Builder::new()
        .prefix("jailgate-demo-")
        .tempdir()
        .context("creating the demo folder")?;
    let jail = folder.path().join("jail");
    // The classic profile, plus what the sample CGIs use.
    let mut options = jailfs::InitOptions::new(jail.clone(), user.clone());
    options
        .programs
        .extend(["env", "id", "ls"].map(String::from));
    jailfs::init(&options).context("building the demo jail")?;
    write_samples(&jail.join(CGI_DIR.trim_start_matches('/')))?;

    let mut config = Config::new(jail.clone(), user);
    config.workers = config.workers.min(4);
    config.listen = ListenAddr::Tcp(listen);
    let config = config.validate()?;
    let front_user = FrontUser::parse(gateway_user, &config).map_err(anyhow::Error::msg)?;
    eprintln!("Demo jail in {} (removed on exit). Try:", jail.display());
    eprintln!("  curl http://{listen}/cgi-bin/hello.sh");
    eprintln!("  curl 'http://{listen}/cgi-bin/env.sh/extra/path?a=1&b=2'");
    eprintln!("  curl --data-binary @/etc/os-release http://{listen}/cgi-bin/echo.sh");
    eprintln!("  open http://{listen}/cgi-bin/form.sh in a browser");
    eprintln!("Stop with Ctrl-C.");
    // SIGHUP starts a fresh pool on the same settings.
    let same = config.clone();
    let code = crate::serve(Startup {
        config,
        front_user,
        listen_given: true,
        reload: Box::new(move || Ok(same.clone())),
    });
    drop(folder);
    Ok(code)
}

fn write_samples(cgi_bin: &Path) -> anyhow::Result<()> {
    for (name, script) in SAMPLES {
        let path = cgi_bin.join(name);
        std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

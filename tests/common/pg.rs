//! Fresh PostgreSQL schemas: one per test, given to the store as its
//! `search_path` (`?options[search_path]=...`), and dropped when the test
//! ends, also when it fails. A schema takes milliseconds; a database half a
//! second to create and drop. PostgreSQL must answer: the tests that use it
//! fail, never skip, when it does not.

use std::time::Duration;

use sqlx::Connection;

/// Where the tests find PostgreSQL unless `PAYRELAY_TEST_POSTGRES_URL` says.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The database the tests make their schemas in.
pub fn admin_url() -> String {
    std::env::var("PAYRELAY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// A schema of the test's own; dropping it drops the schema.
pub struct PgSchema {
    pub admin_url: String,
    pub name: String,
}

impl PgSchema {
    /// Creates `<prefix>_<random>` in the database of [`admin_url`].
    pub async fn create(prefix: &str) -> PgSchema {
        let admin_url = admin_url();
        let connected = tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&admin_url)).await;
        let mut admin = match connected {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => panic!("{}", postgres_down(&admin_url, &e.to_string())),
            Err(_) => panic!("{}", postgres_down(&admin_url, "no answer within 10 s")),
        };
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE SCHEMA \"{name}\""))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("cannot create the test schema {name}: {e}"));
        let _ = admin.close().await;
        PgSchema { admin_url, name }
    }

    /// The store URL: the admin URL with this schema as `search_path`.
    pub fn store_url(&self) -> url::Url {
        let mut url = url::Url::parse(&self.admin_url).unwrap_or_else(|e| panic!("the PostgreSQL URL: {e}"));
        url.query_pairs_mut().append_pair("options[search_path]", &self.name);
        url
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop runs outside any async context we can await in (and also while
        // a failed test unwinds), so the schema goes on a thread of its own.
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&sql).execute(&mut admin).await.map_err(|e| e.to_string())?;
                admin.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop the test schema {}: {e}", self.name),
            Err(_) => eprintln!("could not drop the test schema {}", self.name),
        }
    }
}

fn postgres_down(url: &str, why: &str) -> String {
    let url = match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("[redacted]"));
            String::from(parsed)
        }
        _ => url.to_owned(),
    };
    format!(
        "PostgreSQL does not answer at {url}: {why}.\n\
         These tests run against PostgreSQL and are never skipped.\n\
         Start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
         (.ci/run does), or point PAYRELAY_TEST_POSTGRES_URL at a database where the user may create schemas."
    )
}

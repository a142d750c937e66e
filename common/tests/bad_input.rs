//! Bad input at the `kinesis-common` level: each refusal says which limit or form was broken
//! (the error's `Display` text is what a caller logs), and a bad value among good ones
//! affects only itself.
//!
//! The producer and consumer build on these checks; their own bad-input tests are in
//! `producer/tests/bad_input.rs` and `consumer/tests/bad_input.rs`.

use kinesis_common::error_chain as chain;
use kinesis_common::{
    ExtendedSequenceNumber, HashKey, PartitionKey, SequenceNumber, ValidationError,
};

#[test]
fn empty_and_over_long_partition_keys_are_refused_naming_the_limit_in_characters() {
    let cases = [
        (String::new(), "partition key is empty: it must be 1 to 256 Unicode characters"),
        ("k".repeat(257), "partition key has 257 characters: the limit is 256 Unicode characters"),
        ("é".repeat(300), "partition key has 300 characters: the limit is 256 Unicode characters"),
    ];
    for (key, message) in cases {
        assert_eq!(PartitionKey::new(key).unwrap_err().to_string(), message);
    }
    // The limit counts characters, not bytes: the good keys around the bad ones pass.
    for good in ["k".to_owned(), "k".repeat(256), "é".repeat(256)] {
        assert!(PartitionKey::new(good).is_ok());
    }
}

#[test]
fn explicit_hash_keys_out_of_range_or_not_decimal_are_refused_naming_the_range() {
    let two_pow_128 = "340282366920938463463374607431768211456";
    assert_eq!(
        HashKey::from_decimal(two_pow_128).unwrap_err().to_string(),
        format!(
            "explicit hash key \"{two_pow_128}\" is out of range: the largest is 2^128-1 \
             (340282366920938463463374607431768211455)"
        )
    );
    for text in ["", "-1", "+1", " 42", "4 2", "1.0", "0x10", "1e5", "٤٢"] {
        let error = HashKey::from_decimal(text).unwrap_err();
        assert!(matches!(error, ValidationError::HashKeyNotDecimal { .. }), "{text:?}");
        assert_eq!(
            error.to_string(),
            format!("explicit hash key {text:?} is not a decimal integer in 0..=2^128-1")
        );
    }
    // A huge value is cut in the message, never echoed whole.
    let huge = "9".repeat(10_000);
    let message = HashKey::from_decimal(&huge).unwrap_err().to_string();
    assert!(message.len() < 200 && message.contains("2^128-1"), "{message}");
    // The edges of the range still pass.
    assert_eq!(HashKey::from_decimal("0").unwrap(), HashKey::MIN);
    assert_eq!(HashKey::from_decimal("340282366920938463463374607431768211455"), Ok(HashKey::MAX));
}

#[test]
fn checkpoint_strings_that_are_not_sequence_numbers_are_refused_naming_the_accepted_forms() {
    for text in ["12ab", "-5", "SHARD_ENDED", "latest", "", " 12", "1.5", &"1".repeat(130)] {
        let error = ExtendedSequenceNumber::from_checkpoint(text, 0).unwrap_err();
        assert!(matches!(error, ValidationError::Checkpoint { .. }), "{text:?}");
        let message = error.to_string();
        assert!(
            message.ends_with(
                "must be a sequence number or one of TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END"
            ),
            "{message}"
        );
        assert!(message.len() < 300, "long input is cut: {message}");
    }
    assert_eq!(
        ExtendedSequenceNumber::from_checkpoint("12ab", 0).unwrap_err().to_string(),
        "invalid checkpoint \"12ab\": must be a sequence number or one of TRIM_HORIZON, LATEST, \
         AT_TIMESTAMP, SHARD_END"
    );
    assert_eq!(
        SequenceNumber::new("0x1f").unwrap_err().to_string(),
        "invalid sequence number \"0x1f\": must be 1 to 129 decimal digits"
    );
    // The accepted forms still parse.
    let sequence = "49590338271490256608559692538361571095921575989136588898";
    let position = ExtendedSequenceNumber::from_checkpoint(sequence, 3).unwrap();
    assert_eq!((position.checkpoint_str(), position.sub_sequence()), (sequence, 3));
    assert_eq!(
        ExtendedSequenceNumber::from_checkpoint("TRIM_HORIZON", 0),
        Ok(ExtendedSequenceNumber::TrimHorizon)
    );
}

#[cfg(feature = "aws")]
mod access_denied {
    use std::io::{BufRead, BufReader, Read, Write};

    use super::chain;
    use kinesis_common::{ApiErrorKind, KinesisApi, SdkKinesis, StreamName};

    /// Answers every HTTP request on a loopback port with Kinesis' answer to a caller whose
    /// IAM policy lacks the action (no emulator can deny access). Returns the endpoint URL;
    /// the server thread lives until the test process ends.
    pub(super) fn kinesis_denying(message: &'static str) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let answer =
                    format!("{{\"__type\":\"AccessDeniedException\",\"message\":{message:?}}}");
                let response = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/x-amz-json-1.1\r\n\
                     x-amzn-requestid: bad-input-test\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = reader.into_inner().write_all(response.as_bytes());
            }
        });
        url
    }

    #[tokio::test]
    async fn access_denied_by_kinesis_is_final_and_keeps_the_aws_message() {
        const MESSAGE: &str = "User: arn:aws:iam::000000000000:user/app is not authorized to \
                               perform: kinesis:ListShards on resource: \
                               arn:aws:kinesis:us-east-1:000000000000:stream/orders because no \
                               identity-based policy allows the kinesis:ListShards action";
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .endpoint_url(kinesis_denying(MESSAGE))
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                "id", "secret", None, None, "test",
            ))
            .build();
        let client = aws_sdk_kinesis::Client::from_conf(config);
        let kinesis = SdkKinesis::from_clients(client.clone(), client.clone(), client);
        let error = kinesis.list_shards(&StreamName::new("orders").unwrap()).await.unwrap_err();
        assert_eq!(error.kind(), ApiErrorKind::AccessDenied);
        assert!(!error.is_retryable());
        assert_eq!(error.code(), Some("AccessDeniedException"));
        assert_eq!(error.to_string(), format!("access denied (AccessDeniedException): {MESSAGE}"));
        assert!(chain(&error).starts_with(&error.to_string()));
    }
}

#[cfg(feature = "aws")]
mod missing_credentials {
    use super::chain;
    use kinesis_common::{ApiErrorKind, KinesisApi, SdkKinesis, StreamName};

    /// A client configured without any credentials provider (as `SdkConfig::builder()` gives
    /// unless one is set), pointed at a port nothing listens on: the call must fail before
    /// anything is sent.
    fn kinesis_without_credentials() -> SdkKinesis {
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .build();
        SdkKinesis::new(&config)
    }

    #[tokio::test]
    async fn a_call_without_credentials_fails_before_sending_and_its_error_chain_says_why() {
        let kinesis = kinesis_without_credentials();
        let stream = StreamName::new("orders").unwrap();
        let error = kinesis.list_shards(&stream).await.unwrap_err();
        let text = chain(&error);
        assert!(
            text.starts_with(
                "access denied: ListShards could not be signed: no usable AWS credentials (set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or a role, or give the \
                 SdkConfig a credentials provider)"
            ),
            "{text}"
        );
        // The SDK's own reason stays in the chain.
        assert!(text.contains("no identity resolver"), "{text}");
        assert_eq!(error.code(), None);
    }

    /// Missing credentials are not a passing fault: the producer fails the records at once
    /// instead of retrying them until their TTL, and the consumer does not retry for ever.
    #[tokio::test]
    async fn a_call_without_credentials_is_access_denied_not_transient() {
        let kinesis = kinesis_without_credentials();
        let error = kinesis.list_shards(&StreamName::new("orders").unwrap()).await.unwrap_err();
        assert_eq!(error.kind(), ApiErrorKind::AccessDenied, "{}", chain(&error));
        assert!(!error.is_retryable());
    }

    /// A credentials provider that finds none (as the default chain on a machine without any):
    /// access denied too, with the provider's reason in the chain.
    #[tokio::test]
    async fn a_provider_that_finds_no_credentials_is_access_denied_naming_its_reason() {
        #[derive(Debug)]
        struct Nowhere;
        impl aws_credential_types::provider::ProvideCredentials for Nowhere {
            fn provide_credentials<'a>(
                &'a self,
            ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                    aws_credential_types::provider::error::CredentialsError::not_loaded(
                        "no credentials in the environment, profile or instance metadata",
                    ),
                ))
            }
        }
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:1")
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                Nowhere,
            ))
            .build();
        let kinesis = SdkKinesis::new(&config);
        let error = kinesis.list_shards(&StreamName::new("orders").unwrap()).await.unwrap_err();
        let text = chain(&error);
        assert_eq!(error.kind(), ApiErrorKind::AccessDenied, "{text}");
        assert!(text.contains("no usable AWS credentials"), "{text}");
        assert!(text.contains("no credentials in the environment"), "{text}");
    }
}

#[cfg(feature = "aws")]
mod plain_http {
    use std::net::TcpListener;

    use super::chain;
    use kinesis_common::{ApiErrorKind, KinesisApi, SdkKinesis, StreamName};

    /// `0.0.0.0` is not a loopback address, so plain HTTP to it is refused; but a connection
    /// to it reaches this machine (Linux routes it to the loopback interface), so a listener
    /// on `127.0.0.1` sees whatever would have been sent.
    fn not_loopback(loopback_url: &str) -> String {
        loopback_url.replace("127.0.0.1", "0.0.0.0")
    }

    fn config(endpoint: Option<&str>) -> aws_config::SdkConfig {
        let mut config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("id", "secret", None, None, "test"),
            ));
        if let Some(endpoint) = endpoint {
            config = config.endpoint_url(endpoint);
        }
        config.build()
    }

    /// Whether anything connected to `listener` (without waiting: a refused call returns
    /// only after it would have connected).
    fn anything_connected(listener: &TcpListener) -> bool {
        listener.set_nonblocking(true).unwrap();
        match listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }

    #[tokio::test]
    async fn plain_http_to_a_host_that_is_not_loopback_is_refused_before_anything_is_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://0.0.0.0:{}", listener.local_addr().unwrap().port());
        let kinesis = SdkKinesis::new(&config(Some(&endpoint)));
        let error = kinesis.list_shards(&StreamName::new("orders").unwrap()).await.unwrap_err();
        assert_eq!(
            chain(&error),
            format!(
                "kinesis error: ListShards was not sent: plain HTTP endpoint {endpoint} \
                 refused: use https, a loopback emulator, or SdkKinesis::allow_plain_http()"
            )
        );
        assert_eq!(error.kind(), ApiErrorKind::Other);
        assert!(!error.is_retryable());
        assert!(!anything_connected(&listener));
    }

    /// The endpoint may come from the service-specific configuration
    /// (`AWS_ENDPOINT_URL_KINESIS`, or `endpoint_url` under `[services]` in a profile) rather
    /// than from the SdkConfig's own endpoint URL: the check applies to the URL each request
    /// goes to, wherever it came from.
    #[tokio::test]
    async fn a_service_specific_plain_http_endpoint_is_refused_too() {
        #[derive(Debug)]
        struct KinesisEndpoint(String);
        impl aws_types::service_config::LoadServiceConfig for KinesisEndpoint {
            fn load_config(
                &self,
                key: aws_types::service_config::ServiceConfigKey<'_>,
            ) -> Option<String> {
                (key.service_id() == "Kinesis" && key.env() == "AWS_ENDPOINT_URL")
                    .then(|| self.0.clone())
            }
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://0.0.0.0:{}", listener.local_addr().unwrap().port());
        let config =
            config(None).into_builder().service_config(KinesisEndpoint(endpoint.clone())).build();
        let kinesis = SdkKinesis::new(&config);
        // Every client of the adapter is guarded: control plane, data plane, event stream.
        let stream = StreamName::new("orders").unwrap();
        let errors = [
            kinesis.list_shards(&stream).await.unwrap_err(),
            kinesis
                .get_records(&kinesis_common::api::ShardIterator("AAAA".into()), Some(10))
                .await
                .unwrap_err(),
        ];
        for error in errors {
            assert!(chain(&error).contains(&format!("plain HTTP endpoint {endpoint} refused")));
            assert!(!error.is_retryable());
        }
        assert!(!anything_connected(&listener));
    }

    #[tokio::test]
    async fn allow_plain_http_sends_to_any_host() {
        let endpoint = not_loopback(&super::access_denied::kinesis_denying("denied"));
        let kinesis = SdkKinesis::new(&config(Some(&endpoint))).allow_plain_http();
        let error = kinesis.list_shards(&StreamName::new("orders").unwrap()).await.unwrap_err();
        // The request reached the server, which answered.
        assert_eq!(error.code(), Some("AccessDeniedException"), "{}", chain(&error));
    }

    #[tokio::test]
    async fn clients_configured_by_hand_are_guarded_as_well() {
        let endpoint = not_loopback(&super::access_denied::kinesis_denying("denied"));
        let client = aws_sdk_kinesis::Client::new(&config(Some(&endpoint)));
        let kinesis = SdkKinesis::from_clients(client.clone(), client.clone(), client);
        let stream = StreamName::new("orders").unwrap();
        let error = kinesis.list_shards(&stream).await.unwrap_err();
        assert!(chain(&error).contains("refused: use https"), "{}", chain(&error));
        let error = kinesis.allow_plain_http().list_shards(&stream).await.unwrap_err();
        assert_eq!(error.code(), Some("AccessDeniedException"), "{}", chain(&error));
    }

    #[tokio::test]
    async fn loopback_emulators_keep_working_over_plain_http() {
        for host in ["127.0.0.1", "localhost"] {
            let endpoint =
                super::access_denied::kinesis_denying("denied").replace("127.0.0.1", host);
            let kinesis = SdkKinesis::new(&config(Some(&endpoint)));
            let error = kinesis.list_shards(&StreamName::new("orders").unwrap()).await.unwrap_err();
            assert_eq!(error.code(), Some("AccessDeniedException"), "{}", chain(&error));
        }
    }
}

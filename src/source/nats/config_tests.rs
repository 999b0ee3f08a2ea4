//! Unit tests of the NATS settings: resolution of flags over the TOML file.

use super::*;

#[test]
fn empty_names_are_refused_at_start() {
    let ingest = |ns: &str| NatsArgs {
        nats: Some("nats://127.0.0.1:4222".into()),
        nats_namespace: Some(ns.into()),
        ..Default::default()
    };
    assert!(NatsSettings::resolve(&ingest(""), None, &[]).is_err());
    assert!(NatsSettings::resolve(&ingest("prod"), None, &[]).is_ok());
    let relay = NatsArgs {
        nats_publish: Some("nats://127.0.0.1:4222".into()),
        node: Some("n1".into()),
        ..Default::default()
    };
    let scope: EngineScopeFile = toml::from_str("component = \"\"").unwrap();
    let err = NatsSettings::resolve(&relay, None, &[Some(scope)]).unwrap_err();
    assert!(err.contains("component"), "{err}");
    let blank = NatsArgs {
        node: Some(" ".into()),
        ..relay.clone()
    };
    assert!(NatsSettings::resolve(&blank, None, &[None]).is_err());
}

#[test]
fn the_frame_age_bound_defaults_to_stale_after_and_zero_lifts_it() {
    let args = NatsArgs {
        nats: Some("nats://127.0.0.1:4222".into()),
        ..Default::default()
    };
    let file =
        |age: &str| -> NatsFile { toml::from_str(&format!("max_frame_age = {age:?}")).unwrap() };
    let stale = Duration::from_secs(3);
    let bound = |f: Option<&NatsFile>, a: &NatsArgs| {
        NatsSettings::resolve(a, f, &[]).map(|s| s.unwrap().frame_age_bound(stale))
    };
    assert_eq!(bound(None, &args), Ok(Some(stale)));
    assert_eq!(
        bound(Some(&file("10s")), &args),
        Ok(Some(Duration::from_secs(10)))
    );
    assert_eq!(bound(Some(&file("0s")), &args), Ok(None));
    let flag = NatsArgs {
        nats_max_frame_age: Some(Duration::from_millis(500)),
        ..args.clone()
    };
    assert_eq!(
        bound(Some(&file("10s")), &flag),
        Ok(Some(Duration::from_millis(500)))
    );
    assert!(bound(Some(&file("soon")), &args).is_err());
}

#[test]
fn relayed_series_default_to_the_edges_and_the_flag_overrides_the_file() {
    let who = |args: &NatsArgs, file: Option<&NatsFile>| {
        NatsSettings::resolve(args, file, &[])
            .unwrap()
            .unwrap()
            .relayed_series
    };
    let flag = NatsArgs {
        nats: Some("nats://127.0.0.1:4222".into()),
        ..Default::default()
    };
    assert_eq!(who(&flag, None), RelayedSeries::Edge);
    let file: NatsFile =
        toml::from_str("url = \"nats://127.0.0.1:4222\"\nrelayed_series = \"central\"").unwrap();
    assert_eq!(
        who(&NatsArgs::default(), Some(&file)),
        RelayedSeries::Central
    );
    let edge = NatsArgs {
        nats_relayed_series: Some(RelayedSeries::Edge),
        ..flag
    };
    assert_eq!(who(&edge, Some(&file)), RelayedSeries::Edge);
    assert!(toml::from_str::<NatsFile>("relayed_series = \"both\"").is_err());
}

function (doc) {
  // One row per instance, keyed [study, series, series attributes as JSON]; with _count and
  // group_level 3 it is one row per series with NumberOfSeriesRelatedInstances.
  var d = doc.dataset;
  if (!d || typeof d !== 'object') { return; }
  function first(tag) {
    var e = d[tag];
    return (e && e.Value && e.Value.length && typeof e.Value[0] === 'string') ? e.Value[0] : '';
  }
  var study = first('0020000D'), series = first('0020000E');
  if (!study || !series) { return; }
  // General Series, General Equipment, Frame of Reference, request attributes (dicomweb_couch/levels.py)
  var SERIES = LEVEL_TAGS_SERIES;
  var attrs = {};
  for (var i = 0; i < SERIES.length; i++) {
    if (d[SERIES[i]]) { attrs[SERIES[i]] = d[SERIES[i]]; }
  }
  emit([study, series, JSON.stringify(attrs)], null);
}

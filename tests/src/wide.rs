//! A service of 200 methods: its method list (several KiB) is fetched by key from the
//! nodes that publish it, never gossiped (decisions.md's gossip budget).

use crate::lab::LabError;

macro_rules! wide_service {
    ($($method:ident)*) => {
        /// 200 methods, each answering its argument plus one.
        #[meshrpc::service]
        pub trait Wide {
            $(async fn $method(&self, value: u32) -> Result<u32, LabError>;)*
        }

        /// The only implementation.
        pub struct WideNode;

        #[meshrpc::async_trait]
        impl Wide for WideNode {
            $(async fn $method(&self, value: u32) -> Result<u32, LabError> {
                Ok(value + 1)
            })*
        }
    };
}

wide_service!(m000 m001 m002 m003 m004 m005 m006 m007 m008 m009 m010 m011 m012 m013 m014 m015 m016 m017 m018 m019 m020 m021 m022 m023 m024 m025 m026 m027 m028 m029 m030 m031 m032 m033 m034 m035 m036 m037 m038 m039 m040 m041 m042 m043 m044 m045 m046 m047 m048 m049 m050 m051 m052 m053 m054 m055 m056 m057 m058 m059 m060 m061 m062 m063 m064 m065 m066 m067 m068 m069 m070 m071 m072 m073 m074 m075 m076 m077 m078 m079 m080 m081 m082 m083 m084 m085 m086 m087 m088 m089 m090 m091 m092 m093 m094 m095 m096 m097 m098 m099 m100 m101 m102 m103 m104 m105 m106 m107 m108 m109 m110 m111 m112 m113 m114 m115 m116 m117 m118 m119 m120 m121 m122 m123 m124 m125 m126 m127 m128 m129 m130 m131 m132 m133 m134 m135 m136 m137 m138 m139 m140 m141 m142 m143 m144 m145 m146 m147 m148 m149 m150 m151 m152 m153 m154 m155 m156 m157 m158 m159 m160 m161 m162 m163 m164 m165 m166 m167 m168 m169 m170 m171 m172 m173 m174 m175 m176 m177 m178 m179 m180 m181 m182 m183 m184 m185 m186 m187 m188 m189 m190 m191 m192 m193 m194 m195 m196 m197 m198 m199);
